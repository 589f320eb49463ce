"""The engine's layering: subpackages import only from their own layer or below, with no circles and no private names across modules;
an import inside a function is there for a reason, written beside it."""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, List, Set, Tuple

PACKAGE = Path(__file__).resolve().parents[2] / "fagan_engine"
LAYERS = ["util", "io", "mri", "models", "inference", "through_plane", "trust", "pipeline", "training", "cli"]
"""Bottom to top; a module may import from its own layer and the ones before it."""
TOP_LEVEL = {"__init__", "__main__", "_version"}
"""Package-level modules: ``_version`` is a leaf every layer may use; ``__init__``/``__main__`` are the front door."""


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> List[Tuple[str, List[str], int]]:
    """(imported fagan_engine module, imported names, line) for every import in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fagan_engine"):
            assert node.level == 0, f"{path}: relative import"
            found.append((node.module[len("fagan_engine."):] if node.module != "fagan_engine" else "", [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("fagan_engine."):
                    found.append((alias.name[len("fagan_engine."):], [], node.lineno))
    return found


def _layer(module: str) -> int:
    head = module.split(".")[0]
    if head in TOP_LEVEL or head == "":
        return -1 if head == "_version" else len(LAYERS)
    return LAYERS.index(head)


def _graph() -> Dict[str, Set[str]]:
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: Dict[str, Set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for target, names, _ in _imports(path):
            for name in names or [""]:
                candidate = f"{target}.{name}" if target and name else (target or name)
                graph[module].add(candidate if candidate in modules else target)
    return graph


def test_every_module_is_in_a_layer() -> None:
    for path in PACKAGE.rglob("*.py"):
        module = _module(path)
        assert module in ("", "__main__", "_version") or module.split(".")[0] in LAYERS, f"{module} is in no layer"


def test_no_import_runs_up_a_layer() -> None:
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        module = _module(path)
        if module in ("", "__main__"):
            continue
        for target, _, line in _imports(path):
            if _layer(target) > _layer(module):
                wrong.append(f"{module}:{line} imports {target}")
    assert not wrong, "imports back up a layer:\n" + "\n".join(wrong)


def test_no_import_circles() -> None:
    graph = _graph()
    state: Dict[str, int] = {}
    cycles: List[str] = []

    def visit(node: str, stack: List[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph or nxt == node or nxt in ("",):
                continue
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]) if nxt in stack else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state and module not in ("", "__main__"):
            visit(module, [module])
    cycles = [c for c in cycles if not c.startswith(("__init__", " "))]
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_no_private_name_imported_across_modules() -> None:
    wrong = [
        f"{_module(path)}:{line} imports {name} from {target}"
        for path in PACKAGE.rglob("*.py")
        for target, names, line in _imports(path)
        for name in names
        if name.startswith("_") and name != "__version__"
    ]
    assert not wrong, "\n".join(wrong)


LAZY = re.compile(r"#\s*lazy:\s*\S")
"""The mark of an import left inside a function: ``# lazy: <why>`` (torch kept out of an import, an optional dependency...)."""


def _function_imports(tree: ast.AST) -> List[ast.stmt]:
    """Every import statement inside a function (nested functions and classes included)."""
    found: List[ast.stmt] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)) and in_function:
                found.append(child)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(tree, False)
    return found


def test_every_import_inside_a_function_says_why() -> None:
    """Imports belong at the top of the module, except where deferring one keeps torch (or another heavy or optional
    dependency) out of an import; each of those carries ``# lazy: <why>`` on its line or as a comment line just above."""
    unmarked = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in _function_imports(ast.parse("\n".join(lines))):
            above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
            if not LAZY.search(lines[node.lineno - 1]) and not (above.startswith("#") and LAZY.search(above)):
                unmarked.append(f"{_module(path)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not unmarked, "imports inside functions without a '# lazy: <why>' comment (move them to the top, or say why not):\n" + "\n".join(unmarked)


def test_the_lazy_mark_check_sees_unmarked_imports() -> None:
    source = (
        "import os\n\n\ndef f():\n    import json\n    import torch  # lazy: torch\n\n"
        "    class C:\n        def g(self):\n            from a import b\n"
    )
    assert [node.lineno for node in _function_imports(ast.parse(source))] == [5, 6, 10]
    assert not LAZY.search("import json  # lazy:") and LAZY.search("import torch  # lazy: torch stays out")
