#!/usr/bin/env python3
"""Lists import cycles between sibling modules of a Rust crate.

Usage: ci/module-cycles.py CRATE_SRC_DIR [--edges] [--files]

How it works (a text scan, not a compiler pass, so keep the code plain):
- every .rs file under the directory is one module (`foo.rs` and `foo/mod.rs` are
  `foo`); `#[cfg(test)] mod tests { ... }` blocks are left out, since a test may
  reach anywhere;
- an edge A -> B is any path in A's code that names module B: `crate::b::...`,
  `super::...`, `self::...`, or a child module by its bare name (`child::item`),
  resolved to the longest known module prefix;
- for every parent module, each child subtree is collapsed into one node and the
  cycles among those siblings are reported (e.g. `api` -> `auth` -> `api`, or
  `controllers::longhorn` <-> `controllers::snapshots`). Edges between a module
  and its own ancestors (a child using its parent's `Ctx`) are not sibling edges;
  a parent that declares its children and a child that uses the parent's types
  is the ordinary shape of a Rust module tree.

`--files` also lists cycles between single files, parent/child ones included,
for information; they do not change the exit status.

Exit status 1 when a cycle between siblings is found.
"""

import os
import re
import sys


def module_of(src, path):
    rel = os.path.relpath(path, src)[: -len(".rs")].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return tuple(rel)


def strip(text):
    """Drops comments, string literals and the trailing test module."""
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", text)
    if m:
        text = text[: m.start()]
    return text


def expand_use(body):
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"]."""
    body = re.sub(r"\s+", "", body)
    out = []

    def walk(prefix, s):
        depth, start, parts = 0, 0, []
        for i, ch in enumerate(s):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                parts.append(s[start:i])
                start = i + 1
        parts.append(s[start:])
        for part in parts:
            if not part:
                continue
            brace = part.find("{")
            if brace >= 0 and part.endswith("}"):
                walk(prefix + part[:brace], part[brace + 1 : -1])
            else:
                out.append(prefix + re.sub(r"\bas\b.*", "", part))

    walk("", body)
    return out


def paths_in(code):
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", code):
        paths.extend(expand_use(m.group(1)))
    code = re.sub(r"\buse\s+[^;]+;", "", code)
    paths.extend(m.group(0) for m in re.finditer(r"\b(?:[a-z_][a-z0-9_]*::)+[A-Za-z_][A-Za-z0-9_]*", code))
    return paths


def resolve(mod, children, modules, path):
    segs = path.split("::")
    if segs[0] == "crate":
        base, rest = (), segs[1:]
    elif segs[0] in ("super", "self"):
        base = mod
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                base = base[:-1]
            segs = segs[1:]
        rest = segs
    elif segs[0] in children:
        base, rest = mod, segs
    else:
        return None
    best = base
    for i in range(1, len(rest) + 1):
        if base + tuple(rest[:i]) in modules:
            best = base + tuple(rest[:i])
        else:
            break
    return best


def sccs(nodes, edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 1 or not os.path.isdir(args[0]):
        sys.exit("usage: ci/module-cycles.py CRATE_SRC_DIR [--edges] [--files]")
    src = args[0]
    show_edges = "--edges" in sys.argv[2:]
    show_files = "--files" in sys.argv[2:]
    files = {}
    for root, _, names in os.walk(src):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(root, name)
                files[module_of(src, path)] = path
    modules = set(files)
    edges = set()
    for mod, path in files.items():
        with open(path, encoding="utf-8") as f:
            code = strip(f.read())
        children = {m[-1] for m in modules if len(m) == len(mod) + 1 and m[: len(mod)] == mod}
        children |= set(re.findall(r"\bmod\s+([a-z_][a-z0-9_]*)\s*;", code))
        for p in paths_in(code):
            target = resolve(mod, children, modules, p)
            if target is not None and target != mod:
                edges.add((mod, target))
    if show_edges:
        for a, b in sorted(edges):
            print(f"{'::'.join(a) or 'crate'} -> {'::'.join(b) or 'crate'}")
    if show_files:
        graph = {}
        for a, b in edges:
            graph.setdefault(a, set()).add(b)
        for comp in sccs(modules, graph):
            print("file-level cycle: " + ", ".join("::".join(c) or "crate" for c in comp))
    found = False
    parents = {m[:-1] for m in modules if m} | {()}
    for parent in sorted(parents):
        depth = len(parent)
        sib = {}
        for a, b in edges:
            if len(a) > depth and len(b) > depth and a[:depth] == parent and b[:depth] == parent:
                if a[depth] != b[depth]:
                    sib.setdefault(a[: depth + 1], set()).add(b[: depth + 1])
        nodes = set(sib) | {n for targets in sib.values() for n in targets}
        for comp in sccs(nodes, sib):
            found = True
            names = ", ".join("::".join(c) for c in comp)
            print(f"cycle under {'::'.join(parent) or 'crate'}: {names}")
            for a, b in sorted(edges):
                if a[: depth + 1] in comp and b[: depth + 1] in comp and a[: depth + 1] != b[: depth + 1]:
                    print(f"    {'::'.join(a)} -> {'::'.join(b)}")
    if not found:
        print(f"no cycles between sibling modules in {src}")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
