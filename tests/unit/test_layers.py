"""The layering of docs/architecture.md, checked on the source: who may import whom."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imports_of(path: Path) -> set[str]:
    """Every module a file imports (absolute names; relative imports resolved against its package)."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names}
    return found


def top(name: str) -> str:
    return name.split(".", 1)[0]


def modules(package: str):
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package, forbidden", [
    ("trackerdb", {"lab", "rehearsal", "tasks", "infra", "tests", "benchmarks"}),
    ("lab", {"rehearsal", "tasks", "tests"}),
    ("infra", {"lab", "rehearsal", "tasks", "tests"}),
    ("rehearsal", {"tasks", "tests", "benchmarks"}),
    # benchmarks reach the lab through lab/ (lab/client.py), never through the tests' modules
    ("benchmarks", {"tests", "tasks"}),
])
def test_a_lower_layer_never_imports_a_higher_one(package, forbidden):
    bad = {str(p.relative_to(ROOT)): sorted(m for m in imports_of(p) if top(m) in forbidden) for p in modules(package)}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"imports across the layers: {bad}"


def test_the_check_sees_an_import_of_the_lab(tmp_path, monkeypatch):
    """The test above can fail: a lazy, relative-free import inside a function is found too."""
    f = ROOT / "trackerdb" / "_layer_probe.py"
    f.write_text("def f():\n    from lab import api\n    import lab.writer\n")
    try:
        assert {"lab", "lab.api", "lab.writer"} <= imports_of(f)
    finally:
        f.unlink()


def test_no_module_is_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for pkg in ("trackerdb", "lab", "rehearsal", "infra")
            for p in modules(pkg) if (n := len(p.read_text().splitlines())) > 500}
    assert not long, f"split these by concern: {long}"


def test_no_import_cycles_in_the_production_package():
    """Module-level and lazy imports alike: a cycle means two concerns were not separated."""
    mods = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p for p in modules("trackerdb")}
    graph = {m: {i for i in imports_of(p) if i in mods and i != m and not m.startswith(i + ".")} for m, p in mods.items()}
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append(stack[stack.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for n in sorted(graph[m]):
            if not m.startswith(n + "."):
                visit(n)
        stack.pop()

    for m in sorted(graph):
        visit(m)
    cycles = [c for c in cycles if not all(x == "trackerdb" or c[0].startswith(x) for x in c)]
    assert not cycles, f"import cycles: {cycles[:3]}"


#: Ranks inside trackerdb/ (docs/architecture.md): a module imports only from its own rank or below, lazy
#: imports included. Every top-level module and package is listed: a new one must be given its rank.
RANKS = {
    # the ground floor: no host, no operation
    "errors": 0, "inputs": 0, "inventory": 0, "owner_map": 0, "compat": 0, "safe_paths": 0, "files": 0, "sql": 0,
    "limits": 0, "pids": 0, "tls": 0, "iam_eval": 0, "tsdb_api": 0, "settings": 0, "secrets": 0, "aws": 0,
    "notify": 0, "steps": 0, "capture_registry": 0, "window_config": 0, "progress": 0,
    # transport: one way to reach a host and its clusters
    "remote": 1, "psql": 1, "session": 1, "detached": 1, "slot_watch": 1,
    # operations, one package per concern
    "provision": 2, "backrest": 2, "migrate": 2, "infra_check": 2,
    # the window, which uses migrate and backrest (never the other way)
    "cutover": 3,
    # the rehearsal's report and signoff read the window's journals
    "rehearse": 4,
    # the tasks' side: flags, Settings, one operation, rendering
    "cli": 5,
}


def _unit(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "trackerdb" and len(parts) > 1 else None


def rank_violations(paths) -> dict[str, list[str]]:
    bad: dict[str, list[str]] = {}
    for p in paths:
        src = _unit(".".join(p.relative_to(ROOT).with_suffix("").parts))
        if src is None or src == "__init__":
            continue
        for m in sorted(imports_of(p)):
            dst = _unit(m)
            if dst and dst != src and dst in RANKS and RANKS[dst] > RANKS.get(src, -1):
                bad.setdefault(str(p.relative_to(ROOT)), []).append(m)
    return bad


def test_every_unit_of_the_package_has_a_rank():
    units = {p.stem if p.parent.name == "trackerdb" else p.parent.relative_to(ROOT / "trackerdb").parts[0]
             for p in modules("trackerdb")} - {"__init__"}
    assert not units - set(RANKS), f"give these a rank in RANKS (and docs/architecture.md): {sorted(units - set(RANKS))}"


def test_no_module_imports_from_a_higher_rank_inside_the_package():
    bad = rank_violations(modules("trackerdb"))
    assert not bad, f"imports from a higher rank: {bad}"


def test_the_rank_check_sees_a_lazy_import_upwards():
    """The test above can fail: migrate reaching into cutover from inside a function is found."""
    f = ROOT / "trackerdb" / "migrate" / "_rank_probe.py"
    f.write_text("def f():\n    from ..cutover import phases\n")
    try:
        assert rank_violations([f]) == {"trackerdb/migrate/_rank_probe.py": ["trackerdb.cutover", "trackerdb.cutover.phases"]}
    finally:
        f.unlink()
