"""The package's layers: imports only point down, no import cycles, no deepdesc imports hidden in functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "deepdesc"

# Bottom to top; a module may import from its own layer and the ones below (README, "Architecture").
LAYERS = [
    ["deepdesc.errors", "deepdesc.utils"],
    ["deepdesc.nn"],
    ["deepdesc.hub"],
    ["deepdesc.features"],
    ["deepdesc.matching"],
    ["deepdesc.io", "deepdesc.viz"],
    ["deepdesc.datasets"],
    ["deepdesc.eval"],
    ["deepdesc.train"],
    ["deepdesc.engine"],
    ["deepdesc.extract", "deepdesc.match", "deepdesc.evaluate", "deepdesc.reconstruct"],
    ["deepdesc.cli", "deepdesc"],
]
# Where importing inside a function is the point: the CLI loads only the command it runs; describe-mat
# rejects a bad .mat file before paying for torch.
LAZY_OK = {"deepdesc.cli", "deepdesc", "deepdesc.io.matlab"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    best = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    if best is None:
        raise AssertionError(f"{module} is in no layer of tests/test_architecture.py: add it")
    return best[0]


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported deepdesc module, imported inside a function) for every import statement of a file."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(n) for n in ast.walk(node) if n is not node)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out += [(n, id(node) in in_function) for n in names if n == "deepdesc" or n.startswith("deepdesc.")]
    return out


FILES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    module = _module_name(path)
    own = _layer(module)
    for target, _ in _imports(path):
        assert _layer(target) <= own, f"{module} (layer {own}) imports {target} (layer {_layer(target)})"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_deepdesc_imports_inside_functions(path):
    module = _module_name(path)
    if module in LAZY_OK:
        return
    hidden = [target for target, inside in _imports(path) if inside]
    assert not hidden, f"{module} imports {hidden} inside functions: import at the top (layers prevent cycles)"


def test_no_import_cycles():
    modules = {_module_name(p): p for p in FILES}
    graph = {m: {t for t, inside in _imports(p) if not inside and t in modules and t != m} for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


def test_layer_table_catches_an_upward_import(tmp_path):
    """The check itself can fail: a features module importing eval is reported."""
    assert _layer("deepdesc.eval.metrics") > _layer("deepdesc.features.extractor")
    assert _layer("deepdesc.nn.cnn3") < _layer("deepdesc.hub.registry")
