"""Figures of the code's shape (issue 24), printed so that a change can be measured before and after.

    .venv/bin/python scripts/code_figures.py          # from the repository root

- lines of `tasks/` and `models/`, and the largest functions;
- `isinstance` tests on model classes and `arch`/`type` string comparisons outside `models/`;
- import arrows that run back up a floor (see FLOORS), and import cycles between modules;
- files over 450 lines.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src" / "folio"

# Each module's floor, by its dotted name's longest matching prefix: an import may point at its own floor or
# one below it, never above. `decoding` knows no model class, so it sits below `models`; `serve.api`,
# `serve.openai` (OpenAI's protocol: request bodies, response shapes, errors) and `export_api` are the small
# plug-in modules that tasks import from their hosts; `version` is on the ground floor so that checkpoints, the CLI
# and the server read it without importing the package root.
FLOORS = {
    "folio.errors": 0, "folio.flags": 0, "folio.runtime": 0, "folio.render": 0, "folio.version": 0,
    "folio.tokenizers": 1,
    "folio.data": 2,
    "folio.nn": 3,
    "folio.decoding": 3,
    "folio.models": 4,
    "folio.training": 5,
    "folio.serve.api": 6, "folio.serve.schemas": 6, "folio.serve.openai": 6, "folio.export_api": 6,
    "folio.tasks": 7,
    "folio.serve": 8, "folio.export": 8,
    "folio.cli": 9, "folio": 9,
}


def floor(module: str) -> int:
    best = max((p for p in FLOORS if module == p or module.startswith(p + ".")), key=len)
    return FLOORS[best]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(tree: ast.Module, module: str, is_package: bool) -> list[tuple[str, bool]]:
    """(imported module, at top level) for every folio import in the file."""
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names if a.name.startswith("folio")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(parent + ([base] if base else []))
            if base.startswith("folio"):  # `from folio.nn import kernels` imports the module folio.nn.kernels
                out.extend((f"{base}.{alias.name}", id(node) in top) for alias in node.names)
    return out


def main() -> None:
    files = sorted(ROOT.rglob("*.py"))
    modules = {module_name(f): f for f in files}
    lines = {m: len(f.read_text().splitlines()) for m, f in modules.items()}
    model_classes: set[str] = set()
    trees = {m: ast.parse(f.read_text()) for m, f in modules.items()}
    for m, tree in trees.items():
        if m.startswith("folio.models"):
            model_classes |= {n.name for n in tree.body if isinstance(n, ast.ClassDef)}

    def total(prefix: str) -> int:
        return sum(n for m, n in lines.items() if m == prefix or m.startswith(prefix + "."))

    print(f"lines: tasks/ {total('folio.tasks')}, models/ {total('folio.models')}, tasks/lm {total('folio.tasks.lm')}, "
          f"src {sum(lines.values())}")
    functions = []
    isinstance_tests, string_tests, arrows, graph = [], [], [], {}
    for m, tree in trees.items():
        where = modules[m].relative_to(ROOT.parent.parent)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                functions.append((node.end_lineno - node.lineno + 1, f"{where}:{node.lineno} {node.name}"))
            if m.startswith("folio.models"):
                continue
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
                names = {n.id if isinstance(n, ast.Name) else getattr(n, "attr", None) for n in ast.walk(node.args[1])}
                if names & model_classes:
                    isinstance_tests.append(f"{where}:{node.lineno}")
            if isinstance(node, ast.Compare):
                texts = [ast.unparse(x) for x in [node.left, *node.comparators]]
                if any(re.search(r"(\barch|objective|model_family|config\.get\('type'\)|config\['type'\))\W*$", t)
                       or re.search(r"\.get\('(arch|objective)'", t) for t in texts):
                    string_tests.append(f"{where}:{node.lineno} {ast.unparse(node)[:70]}")
        is_package = modules[m].name == "__init__.py"
        for target, top in imports(tree, m, is_package):
            resolved = max((k for k in modules if target == k or target.startswith(k + ".")), key=len, default=None)
            if resolved is None or resolved == m:
                continue
            if top:
                graph.setdefault(m, set()).add(resolved)
            if floor(resolved) > floor(m):
                arrows.append(f"{m} -> {resolved}{'' if top else ' (in a function)'}")
    functions.sort(reverse=True)
    print("largest functions: " + "; ".join(f"{n} lines {w}" for n, w in functions[:5]))
    print(f"isinstance tests on model classes outside models/: {len(isinstance_tests)}")
    for w in isinstance_tests:
        print("   ", w)
    print(f"arch/type/objective string comparisons outside models/: {len(string_tests)}")
    for w in string_tests:
        print("   ", w)
    print(f"import arrows up a floor: {len(arrows)}")
    for a in sorted(arrows):
        print("   ", a)
    cycles = strongly_connected(graph)
    print(f"import cycles (top-level imports, modules in one cycle): {len(cycles)}")
    for c in cycles:
        print("   ", " <-> ".join(sorted(c)))
    big = sorted(((n, m) for m, n in lines.items() if n > 450), reverse=True)
    print(f"files over 450 lines: {len(big)}" + "".join(f"\n    {m} {n}" for n, m in big))
    sys.exit(0)


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    main()
