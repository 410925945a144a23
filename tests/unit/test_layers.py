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
