"""The house rules of the package layout (docs/architecture.md), read from the source with ``ast``: imports only go
down the layers of the data flow, no import circle, no module over 400 lines, every error class in errors.py, every
folder says its job."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "synthgen"
# top to bottom; a module may import its own folder and anything in a lower layer, never a layer above or a
# neighbour in its own layer
LAYERS = [
    {"__main__"},
    {"cli"},
    {"dataset"},
    {"validation"},
    {"training"},
    {"evaluation"},
    {"jobs"},
    {"engine", "pipelines"},
    {"climate", "models"},
    {"config"},
    {"data"},  # synthgen.data: the loaders of a dataset's users, over io's one tile reader
    {"io"},
    {"prompts"},
    {"schema"},
    {"safe_yaml"},
    {"errors", "synthgen"},  # "synthgen": the package's own __init__ (its version)
]
LAYER = {part: depth for depth, parts in enumerate(LAYERS) for part in parts}
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        mods[name] = path
    return mods


MODULES = _modules()


def _part(module: str) -> str:
    """The top-level folder or module of ``synthgen.<part>...`` (``synthgen`` for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "synthgen"


def _imports(module: str) -> set[str]:
    """The synthgen modules ``module`` imports (resolved to modules that exist)."""
    path = MODULES[module]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[: None if path.name == "__init__.py" else -1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target.startswith("synthgen") and target != module:
                found.add(target)
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def test_every_top_level_part_has_a_layer():
    parts = {_part(m) for m in MODULES}
    assert parts <= set(LAYER), f"give these a layer in LAYERS and docs/architecture.md: {sorted(parts - set(LAYER))}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_go_down(module):
    own = _part(module)
    upward = sorted(target for target in GRAPH[module] if _part(target) != own and LAYER[_part(target)] <= LAYER[own])
    assert not upward, f"{module} imports {upward}: a layer above, or a neighbour in its own layer"


def test_the_engine_knows_no_model():
    for module in MODULES:
        if _part(module) == "engine":
            assert not {_part(t) for t in GRAPH[module]} & {"models", "pipelines", "jobs"}, module


def test_no_import_circle():
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            # a package's __init__ importing its own children is not a circle of design
            if len(component) > 1 and not all(c.startswith(min(component, key=len)) for c in component):
                circles.append(sorted(component))

    for module in sorted(MODULES):
        if module not in index:
            visit(module)
    assert not circles


def test_no_module_over_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in MODULES.values() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"split by responsibility: {long}"


def test_error_classes_live_in_errors_py():
    elsewhere = []
    for module, path in MODULES.items():
        if module == "synthgen.errors":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Name) and b.id.endswith(("Error", "Exception")) for b in node.bases
            ):
                elsewhere.append(f"{module}.{node.name}")
    assert not elsewhere


def test_every_folder_says_its_job():
    for init in PACKAGE.rglob("__init__.py"):
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init.relative_to(PACKAGE)} has no docstring"
