"""Reading a Slicer module file's tables without importing it (no Slicer application runs here)."""
import ast
from pathlib import Path
from typing import Dict


def constants(path: Path) -> Dict[str, object]:
    """Literal module-level constants of a Python file."""
    values = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return values


def untranslated(node: ast.AST) -> ast.AST:
    """``node`` with every ``_("text")`` call replaced by its literal text."""

    class Unwrap(ast.NodeTransformer):
        def visit_Call(self, call: ast.Call) -> ast.AST:
            if isinstance(call.func, ast.Name) and call.func.id == "_" and len(call.args) == 1:
                return call.args[0]
            return self.generic_visit(call)

    return Unwrap().visit(node)


def translatedTable(path: Path, function: str) -> object:
    """What the module-level ``function`` returns, in the source language. Its body must be one ``return`` of a
    literal whose texts are ``_("text")`` calls (after an optional docstring)."""
    function_node = next(n for n in ast.parse(path.read_text(encoding="utf-8")).body
                         if isinstance(n, ast.FunctionDef) and n.name == function)
    return ast.literal_eval(untranslated(function_node.body[-1].value))
