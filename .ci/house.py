#!/usr/bin/env python3
"""The house rules of src/ that a compiler does not check (issue 26):

1. No import circle: modules are grouped as each top-level module and each `server::<child>`;
   an edge is a `crate::` path (or, inside `server/`, a `super::` path) in code, not in comments,
   doc-only imports or unit tests. A strongly connected component of two or more is a circle.
2. No file over 800 lines without a reason on its first line (`// (N lines: one concern, ...)`).
3. Every module opens with docs (`//!`), after that reason line if any.

Prints each breach and exits 1 if any; prints a summary and exits 0 otherwise.
"""
import collections
import os
import re
import sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else "src"
MAX_LINES = 800


def exists(*parts):
    path = os.path.join(ROOT, *parts)
    return os.path.exists(path + ".rs") or os.path.isdir(path)


def node_of(path):
    rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib"):
        rel = rel[:-1]
    if not rel:
        return "lib"
    if rel[0] == "server" and len(rel) > 1:
        return "server::" + rel[1]
    return rel[0]


def facade_names():
    """What `server/mod.rs` re-exports, by name, with the child that defines it."""
    names = {}
    facade = open(os.path.join(ROOT, "server", "mod.rs"), encoding="utf-8").read()
    for match in re.finditer(r"pub(?:\(crate\))? use self::([a-z_0-9]+)::(\{[^}]*\}|\w+)", facade):
        for name in re.findall(r"\w+", match.group(2)):
            names[name] = "server::" + match.group(1)
    return names


FACADE = facade_names() if exists("server", "mod") else {}


def root_names():
    """What `lib.rs` re-exports at the crate's root, by name, with the module that defines it."""
    names = {}
    lib = open(os.path.join(ROOT, "lib.rs"), encoding="utf-8").read()
    for match in re.finditer(r"pub use ((?:[a-z_0-9]+::)+)(\{[^}]*\}|\w+);", lib):
        module = match.group(1).rstrip(":")
        for name in re.findall(r"\w+", match.group(2)):
            names[name] = target_of(module + "::" + name)
    return names


def target_of(path):
    parts = path.split("::")
    if parts[0] in ROOT_NAMES:
        return ROOT_NAMES[parts[0]]
    if parts[0] == "server" and len(parts) > 1:
        if exists("server", parts[1]):
            return "server::" + parts[1]
        if parts[1] in FACADE:
            return FACADE[parts[1]]
    return parts[0]


def code_of(text, name):
    if name == "tests.rs":
        return ""
    cut = re.search(r"#\[cfg\(test\)\]\s*mod \w+\s*\{", text)
    if cut:
        text = text[: cut.start()]
    text = re.sub(r"#\[cfg\(doc\)\]\s*use[^;]*;", "", text)
    return "\n".join(l for l in text.split("\n") if not l.lstrip().startswith("//"))


edges = collections.defaultdict(set)
why = collections.defaultdict(set)
breaches = []
ROOT_NAMES = {}


def scan():
    files = 0
    for folder, _, names in os.walk(ROOT):
        for name in sorted(names):
            if not name.endswith(".rs"):
                continue
            files += 1
            path = os.path.join(folder, name)
            text = open(path, encoding="utf-8").read()
            lines = text.split("\n")
            rel = os.path.relpath(path, ROOT)
            count = len(lines) - (1 if text.endswith("\n") else 0)
            first = 0
            if lines and re.match(r"// \(\d+ lines[,:] ", lines[0]):
                first = 1
            elif count > MAX_LINES:
                breaches.append(f"{rel}: {count} lines, and no reason on its first line")
            body = [l for l in lines[first:] if not l.startswith("#![")]
            if name != "tests.rs" and "/tests/" not in path and not (body and body[0].startswith("//!")):
                breaches.append(f"{rel}: does not open with module docs (//!)")
            node = node_of(path)
            code = code_of(text, name)
            used = [m.group(1) for m in re.finditer(r"crate::((?:\w+::)*\w+)", code)]
            for group in re.finditer(r"crate::\{([^}]*)\}", code):
                used += re.findall(r"\w+(?:::\w+)*", group.group(1))
            for item in used:
                target = target_of(item)
                if target != node and target != "lib" and exists(target.split("::")[0]):
                    edges[node].add(target)
                    why[(node, target)].add(rel)
            if node.startswith("server::") and path.count(os.sep) - ROOT.count(os.sep) == 2:
                uses = re.finditer(r"\bsuper::(?:\{([^}]*)\}|(\w+))", code)
                for match in uses:
                    for name in re.findall(r"\w+", match.group(1) or match.group(2)):
                        if exists("server", name):
                            target = "server::" + name
                        elif name in FACADE:
                            target = FACADE[name]
                        else:
                            continue  # a name under a child (`super::child::{a, b}`) or a std path
                        if target == node:
                            continue
                        edges[node].add(target)
                        why[(node, target)].add(rel)


    return files


ROOT_NAMES = root_names()
files = scan()

# Tarjan's strongly connected components.
index, low, stack, on_stack, components = {}, {}, [], set(), []
sys.setrecursionlimit(10000)


def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(edges.get(v, ())):
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
        components.append(sorted(component))


nodes = sorted(set(edges) | {t for ts in edges.values() for t in ts})
for v in nodes:
    if v not in index:
        visit(v)
for component in components:
    if len(component) > 1:
        inside = set(component)
        detail = "; ".join(
            f"{a} -> {b} ({', '.join(sorted(why[(a, b)]))})"
            for a in component
            for b in sorted(edges[a] & inside)
        )
        breaches.append(f"import circle among {', '.join(component)}: {detail}")

for breach in breaches:
    print(breach)
if breaches:
    sys.exit(1)
print(f"house: {files} files, {len(nodes)} modules, no import circle, none over {MAX_LINES} lines without a reason, every module documented")
