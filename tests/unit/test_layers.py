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
    mods = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for p in modules("trackerdb")}
    graph = {m: {i for i in imports_of(p) if i in mods and i != m and not m.startswith(i + ".")}
             for m, p in mods.items()}
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
    missing = sorted(units - set(RANKS))
    assert not missing, f"give these a rank in RANKS (and docs/architecture.md): {missing}"


def test_no_module_imports_from_a_higher_rank_inside_the_package():
    bad = rank_violations(modules("trackerdb"))
    assert not bad, f"imports from a higher rank: {bad}"


def test_the_rank_check_sees_a_lazy_import_upwards():
    """The test above can fail: migrate reaching into cutover from inside a function is found."""
    f = ROOT / "trackerdb" / "migrate" / "_rank_probe.py"
    f.write_text("def f():\n    from ..cutover import phases\n")
    try:
        want = {"trackerdb/migrate/_rank_probe.py": ["trackerdb.cutover", "trackerdb.cutover.phases"]}
        assert rank_violations([f]) == want
    finally:
        f.unlink()


#: One way to reach a cluster (issue 26): ``trackerdb/session.py`` is the only module that makes a ``Remote``
#: or a ``Psql`` (psql.py and remote.py define them); lab/ and rehearsal/ go through it too (lab/client.py's
#: ``app_psql`` for the application's view). benchmarks/ are not held to it yet.
MAKERS = {"trackerdb/session.py"}
def _name(node) -> str | None:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None


def constructions(path: Path) -> list[str]:
    """``Psql(…)``/``Remote(…)`` calls (by name or as ``module.Psql(…)``) and ``Psql.target/source(…)``, as
    ``"line: what"``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if _name(f) in ("Psql", "Remote"):
            found.append(f"{node.lineno}: {_name(f)}(")
        elif isinstance(f, ast.Attribute) and f.attr in ("target", "source") and _name(f.value) == "Psql":
            found.append(f"{node.lineno}: Psql.{f.attr}(")
    return sorted(found, key=lambda c: int(c.split(":")[0]))


def construction_violations(paths) -> dict[str, list[str]]:
    bad = {}
    for p in paths:
        rel = str(p.relative_to(ROOT))
        if rel in MAKERS:
            continue
        made = constructions(p)
        if made:
            bad[rel] = made
    return bad


def test_only_the_session_makes_a_remote_or_a_psql():
    bad = construction_violations([p for pkg in ("trackerdb", "lab", "rehearsal", "infra") for p in modules(pkg)])
    assert not bad, f"reach hosts through trackerdb.session (session.psql/own, cluster, connect): {bad}"


def test_the_construction_check_sees_every_way_to_make_one():
    """The rule above can fail: a raw Psql, a module-qualified Remote and a shorthand are all found, outside the
    makers; the same text in session.py is allowed."""
    f = ROOT / "trackerdb" / "cutover" / "_make_probe.py"
    f.write_text("from ..psql import Psql\nfrom .. import remote\n\n\ndef f(h, s):\n"
                 "    remote.Remote(s.target)\n    Psql(h, 5432).run('SELECT 1')\n    return Psql.source(h, s)\n")
    try:
        want = {"trackerdb/cutover/_make_probe.py": ["6: Remote(", "7: Psql(", "8: Psql.source("]}
        assert construction_violations([f]) == want
        assert construction_violations([ROOT / "trackerdb" / "session.py"]) == {}
    finally:
        f.unlink()
