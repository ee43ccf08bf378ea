"""The package's import graph: data flows one way (no module imports another that imports it back,
directly or through others) and the metrics never import the trainer."""
from __future__ import annotations

import ast
import re
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


# -- the layer order ----------------------------------------------------------------------------------
# A package imports only packages of its own layer or of layers below it (listed bottom-up). `cli` is the
# top: it parses, shows and exits; `ui` is the page `e4e ui` serves; `runs` the batch-run layer both use.
LAYERS = [
    {"e4ecli", "runtime", "domains", "alignment", "errors"},  # facts, process-wide switches, errors naming settings
    {"models", "files"},  # pure nn.Modules; file formats, naming, atomic writes, manifests
    {"hub"},  # checkpoints, the weights zoo, the one fetcher
    {"edits", "metrics", "refine", "landmarks", "pasteback"},  # the operations pipelines compose
    {"training", "pipelines"},  # training and inference side by side: neither imports the other (below)
    {"runs"},  # batch runs: discover, shard, lock, skip, manifest; events
    {"ui"},
    {"cli"},
    {"__main__"},
]
INFERENCE = {"pipelines", "runs", "ui", "edits", "metrics", "refine"}
# Imports that break the order today, each named with what replaces it; the test fails when one is gone too
# (so the list only shrinks).
KNOWN: dict[tuple[str, str], str] = {}


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "e4ecli"


def layer_of(package: str) -> int:
    for i, layer in enumerate(LAYERS):
        if package in layer:
            return i
    raise AssertionError(f"package e4ecli.{package} is in no layer of LAYERS: place it there (and in e4ecli/__init__.py's layout)")


def test_every_package_has_a_layer():
    for module in import_graph():
        layer_of(package_of(module))


def breaks() -> dict[tuple[str, str], str]:
    found = {}
    for module, targets in import_graph().items():
        a = package_of(module)
        for target in targets:
            b = package_of(target)
            if layer_of(b) > layer_of(a):
                found[(module, target)] = f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)}) above it"
            elif a != b and (a in INFERENCE) and b == "training" or (a == "training" and b == "pipelines"):
                found[(module, target)] = f"{a} and {b} do not import each other"
    return found


def test_no_package_imports_a_layer_above_it():
    found = breaks()
    new = {k: v for k, v in found.items() if k not in KNOWN}
    assert not new, "\n".join(f"{m} -> {t}: {why}" for (m, t), why in new.items())
    gone = set(KNOWN) - set(found)
    assert not gone, f"fixed, remove from KNOWN: {sorted(gone)}"


def layout_entries() -> list[str]:
    """The names e4ecli/__init__.py's layout lists, in its order: 'models/', 'runtime.py', ... (first column)."""
    names = []
    for line in (e4ecli.__doc__ or "").splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            names += [n.strip() for n in re.split(r"\s{2,}", line.strip())[0].split(",")]
    return names


def test_the_package_docstring_lists_every_package_and_module():
    listed = layout_entries()
    packages = sorted(f"{p.name}/" for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    modules = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    missing = [n for n in packages + modules if n not in listed]
    assert not missing, f"e4ecli/__init__.py's layout does not list: {missing}"
    stale = [n for n in listed if not (PACKAGE / n.rstrip("/")).exists()]
    assert not stale, f"e4ecli/__init__.py's layout lists what does not exist: {stale}"
    layers = [layer_of(n.removesuffix("/").removesuffix(".py")) for n in listed if n.endswith((".py", "/")) and n != "directions/"]
    assert layers == sorted(layers), f"the layout is not bottom-up in the order of LAYERS: {listed}"
