#!/usr/bin/env python3
"""The module import graph of a crate, from its `crate::` paths, and what breaks the
direction: circles (between files, and between top-level modules) and, for the
builder, imports that point up its layer list (ARCHITECTURE.md, "builder").

    scripts/import-graph.py CRATE_SRC_DIR [--layers a,b|c,d,...] [--edges]

A file's module path comes from its place under src/ (`steps/copy.rs` is
`steps::copy`, `solver/mod.rs` is `solver`); every `crate::a::b` in it (in `use`
lines or inline, outside `//` comments and `#[cfg(test)]` modules at the end) is an
edge to the longest existing module prefix. Exit 1 on any circle or upward import.
"""
import os, re, sys

def modules(src):
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith('.rs'):
                continue
            rel = os.path.relpath(os.path.join(root, f), src)[:-3].split(os.sep)
            if rel[-1] == 'mod':
                rel = rel[:-1]
            if rel in (['lib'], ['main']):
                continue
            mods['::'.join(rel)] = os.path.join(root, f)
    return mods

def product_text(path):
    text = open(path).read()
    # Unit tests may reach anywhere in the crate: only product code counts.
    cut = re.search(r'^#\[cfg\(test\)\]\s*\nmod tests', text, re.M)
    if cut:
        text = text[:cut.start()]
    return '\n'.join(l.split('//')[0] for l in text.splitlines())

def edges(src):
    mods = modules(src)
    out = {m: set() for m in mods}
    for m, path in mods.items():
        text = product_text(path)
        refs = set()
        for hit in re.finditer(r'crate::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)', text):
            refs.add(hit.group(1))
        # `use crate::{a, b::c}` groups
        for g in re.finditer(r'crate::\{([^}]*)\}', text):
            for part in g.group(1).split(','):
                part = part.strip().split(' ')[0]
                if part:
                    refs.add(part)
        for r in refs:
            parts = r.split('::')
            for k in range(len(parts), 0, -1):
                cand = '::'.join(parts[:k])
                if cand in mods:
                    if cand != m and not m.startswith(cand + '::'):
                        out[m].add(cand)
                    break
    return out

def cycles(graph):
    found, state, stack = [], {}, []
    def visit(n):
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                found.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[n] = 2
    for n in sorted(graph):
        if n not in state:
            visit(n)
    return found

def main():
    args = sys.argv[1:]
    src = args[0]
    layers = None
    if '--layers' in args:
        layers = [l.split('|') for l in args[args.index('--layers') + 1].split(',')]
    g = edges(src)
    bad = 0
    if '--edges' in args:
        for m in sorted(g):
            print(f"{m} -> {', '.join(sorted(g[m])) or '-'}")
    for c in cycles(g):
        print('circle between files: ' + ' -> '.join(c))
        bad += 1
    top = {}
    for m, ds in g.items():
        for d in ds:
            a, b = m.split('::')[0], d.split('::')[0]
            if a != b:
                top.setdefault(a, set()).add(b)
    for c in cycles(top):
        print('circle between modules: ' + ' -> '.join(c))
        bad += 1
    if layers:
        rank = {name: i for i, names in enumerate(layers) for name in names}
        for m, ds in sorted(g.items()):
            for d in sorted(ds):
                a, b = m.split('::')[0], d.split('::')[0]
                if a == b:
                    continue
                if a not in rank or b not in rank:
                    print(f'not in the layer list: {a if a not in rank else b}')
                    bad += 1
                elif rank[b] <= rank[a]:
                    print(f'upward import: {m} -> {d} ({b} is not listed below {a})')
                    bad += 1
    sys.exit(1 if bad else 0)

main()
