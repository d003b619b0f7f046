#!/usr/bin/env python3
"""Import cycles between the top-level modules of a crate.

Reads every `crate::<module>` path in src/ (use lines and inline paths
alike), builds the graph module -> modules it names, and prints each
strongly connected component of more than one module: a set of modules
that import each other, directly or not. Exits 1 when there is any.

Test code is left out (`#[cfg(test)]` items and files named tests.rs):
a test may build its fixtures with the layer above (a routing test with
a whole runtime) without the production code depending on it.

    scripts/module-cycles.py                 # the gateway
    scripts/module-cycles.py admin/src       # another crate
"""
import re
import sys
from pathlib import Path

src = Path(sys.argv[1] if len(sys.argv) > 1 else "gateway/src")


def without_tests(text: str) -> str:
    """The text without `#[cfg(test)]` items (the attribute up to the end
    of the braced item that follows it)."""
    out = []
    i = 0
    while True:
        j = text.find("#[cfg(test)]", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        k = text.find("{", j)
        semi = text.find(";", j)
        if k < 0 or (0 <= semi < k):
            # `#[cfg(test)] use ...;` or a unit item.
            i = semi + 1 if semi >= 0 else len(text)
            continue
        depth = 0
        for pos in range(k, len(text)):
            if text[pos] == "{":
                depth += 1
            elif text[pos] == "}":
                depth -= 1
                if depth == 0:
                    break
        i = pos + 1
roots = {"lib.rs", "main.rs"}
graph: dict[str, set[str]] = {}
for path in sorted(src.rglob("*.rs")):
    rel = path.relative_to(src)
    if rel.name in roots and len(rel.parts) == 1:
        continue
    module = rel.parts[0].removesuffix(".rs")
    if rel.name == "tests.rs":
        continue
    text = without_tests(path.read_text())
    names = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", text))
    # `use crate::{a, b::C}` groups.
    for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
        names |= set(re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", group))
    graph.setdefault(module, set()).update(n for n in names if n != module)

modules = set(graph) | {m for targets in graph.values() for m in targets}
for m in modules:
    graph.setdefault(m, set())

# Tarjan's strongly connected components.
index: dict[str, int] = {}
low: dict[str, int] = {}
stack: list[str] = []
on_stack: set[str] = set()
components: list[list[str]] = []


def visit(v: str) -> None:
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
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
        if len(component) > 1:
            components.append(sorted(component))


sys.setrecursionlimit(10_000)
for v in sorted(graph):
    if v not in index:
        visit(v)

if not components:
    print(f"{src}: no import cycles between top-level modules")
    sys.exit(0)
for c in components:
    print(f"{src}: cycle among {', '.join(c)}")
    for m in c:
        inside = sorted(graph[m] & set(c))
        print(f"  {m} -> {', '.join(inside)}")
sys.exit(1)
