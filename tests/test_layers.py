"""The package's imports only point down, and no module imports itself in a circle.

Every ``import`` in ``sknets/`` (at module level or inside a function: both
tie one module to another) is read from the source; each module belongs to
one layer of ``LAYERS`` (``docs/architecture.rst`` draws them), and may
import modules of its own layer or below. The import graph has no cycle.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "sknets"

# bottom to top; a module is in the first layer with a matching prefix
LAYERS = [
    (
        "foundation",
        (
            "sknets._compat",
            "sknets._docs",
            "sknets._device",
            "sknets._plan",
            "sknets._registry",
            "sknets._sparse",
            "sknets._summary",
            "sknets._images",
            "sknets._catalog",
            "sknets._version",
            "sknets._pickling",
        ),
    ),
    ("modules", ("sknets.modules",)),
    (
        "engine",
        (
            "sknets._data",
            "sknets._losses",
            "sknets._epochs",
            "sknets._engine",
            "sknets._optim",
            "sknets._members",
            "sknets._validation",
            "sknets._weights",
            "sknets._restore",
            "sknets._tabular_encoding",
        ),
    ),
    (
        "estimators",
        (
            "sknets._planning",
            "sknets._predicting",
            "sknets._epoch_tasks",
            "sknets._fitted",
            "sknets._base",
            "sknets._heads",
            "sknets._mlp",
            "sknets._convnet",
            "sknets._pretrained",
            "sknets._tabular",
        ),
    ),
    ("searches", ("sknets.model_selection",)),
    (
        "top",
        (
            "sknets._stored",
            "sknets._persistence",
            "sknets._skops",
            "sknets.onnx",
            "sknets.inspection",
            "sknets",
        ),
    ),
]


def _module_name(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules():
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _layer(name):
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            # "sknets" itself is the package's __init__, not every module
            if name == prefix or (prefix != "sknets" and name.startswith(prefix + ".")):
                return i
    raise AssertionError(f"{name} is in no layer of LAYERS")


def _imports(name, path, modules):
    """The sknets modules that ``name`` imports (a package: its ``__init__``)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # "from sknets import _docs" imports a submodule; a name: the package
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                for a in node.names
            ]
        else:
            continue
        for target in targets:
            if target == "sknets" or target.startswith("sknets."):
                while target not in modules:  # "sknets.x.y" names an attribute
                    target = target.rpartition(".")[0]
                if target != name:
                    found.add(target)
    return found


@pytest.fixture(scope="module")
def graph():
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_every_module_has_a_layer(graph):
    for name in graph:
        _layer(name)


def test_imports_point_down(graph):
    upward = sorted(
        f"{name} ({LAYERS[_layer(name)][0]}) imports {target} "
        f"({LAYERS[_layer(target)][0]})"
        for name, targets in graph.items()
        for target in targets
        if _layer(target) > _layer(name)
    )
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(
        upward
    )


def _cycle(graph):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle(graph):
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_can_fail():
    """The readers find an upward import and a cycle where there is one."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    modules = _modules()
    imports = _imports("sknets._base", modules["sknets._base"], modules)
    assert "sknets._engine" in imports  # a module-level import is read
    assert _layer("sknets._persistence") > _layer("sknets._base")
    with pytest.raises(AssertionError, match="in no layer"):
        _layer("sknets._new_module")
