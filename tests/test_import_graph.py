"""The package's import graph: data flows one way (no module imports another that imports it back,
directly or through others) and the metrics never import the trainer."""
from __future__ import annotations

import ast
from pathlib import Path

import e4ecli

PACKAGE = Path(e4ecli.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the e4ecli modules it imports anywhere in its text (top level or inside functions)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                for a in node.names:
                    targets.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), list(graph[start])
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    return seen


def test_the_graph_is_read():
    graph = import_graph()
    assert "e4ecli.hub.ada" in graph["e4ecli.hub.checkpoints"]
    assert "e4ecli.models.stylegan2" in graph["e4ecli.models.encoders"]


def test_no_module_imports_itself_back():
    graph = import_graph()
    cycles = sorted(m for m in graph if m in reachable(graph, m))
    assert not cycles, f"modules on an import cycle: {', '.join(cycles)}"


def test_metrics_do_not_import_training():
    graph = import_graph()
    leaks = {m: sorted(t for t in reachable(graph, m) if t.startswith("e4ecli.training"))
             for m in graph if m.startswith("e4ecli.metrics")}
    assert not {m: t for m, t in leaks.items() if t}, leaks
