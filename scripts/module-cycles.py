#!/usr/bin/env python3
"""Finds import cycles between the modules of each crate; exits 1 when there is one.

A module's imports are every `crate::…`, `super::…` and `self::…` path in its file (in
`use` trees and in code). An import from module A of module B counts between the two
children of their lowest common ancestor that hold A and B: so `deploy::desired` using
`apis::owned` is an edge deploy -> apis, and `deploy::desired` using `deploy::plan` is an
edge desired -> plan inside `deploy`. A module using its own ancestor, or declaring and
re-exporting its own children, is structure, not an edge. Among the siblings of every
folder (the crate root included) the edges must form no cycle.

    python3 scripts/module-cycles.py [CRATE_DIR ...]   # default: every crate of the workspace
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CRATES = ["proto", "migrations", "control-plane", "node-agent", "edge-proxy", "cli", "tests", "test-support"]


def modules(src: Path):
    """Maps each module path (a tuple) to its file, from lib.rs or main.rs down."""
    found = {}
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "mod":
            parts = parts[:-1]
        if parts in (["lib"], ["main"]):
            parts = []
        found[tuple(parts)] = f
    return found


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def expand_use(tree: str):
    """Expands a use tree (`a::{b, c::{d}}`) into its paths."""
    tree = tree.strip()
    depth, cut = 0, None
    for i, ch in enumerate(tree):
        if ch == "{" and depth == 0:
            cut = i
            break
    if cut is None:
        return [tree.split(" as ")[0].strip()]
    prefix, inner = tree[:cut], tree[cut + 1 : tree.rindex("}")]
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(inner[start:i])
            start = i + 1
    parts.append(inner[start:])
    out = []
    for p in parts:
        if p.strip():
            out += [prefix + q if q != "self" else prefix.rstrip(":") for q in expand_use(p)]
    return out


def imports(text: str):
    text = strip_comments(text)
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        paths += expand_use(m.group(1))
    paths += re.findall(r"\b(?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+", text)
    return paths


def resolve(path: str, here: tuple, mods: dict, is_dir_module: bool):
    segs = [s for s in path.replace(" ", "").split("::") if s]
    if not segs:
        return None
    if segs[0] == "crate":
        base, segs = (), segs[1:]
    elif segs[0] in ("super", "self"):
        # Inside `a/b.rs` (module a::b) `super` is `a`; inside `a/mod.rs` too.
        base = here
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                base = base[:-1]
            segs = segs[1:]
    else:
        return None
    best = base if base in mods else None
    cur = base
    for s in segs:
        cur = cur + (s,)
        if cur in mods:
            best = cur
        else:
            break
    return best


def find_cycle(nodes, edges):
    colour, stack = {}, []

    def visit(n):
        colour[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if colour.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if colour.get(m) is None:
                c = visit(m)
                if c:
                    return c
        stack.pop()
        colour[n] = 2
        return None

    for n in sorted(nodes):
        if colour.get(n) is None:
            c = visit(n)
            if c:
                return c
    return None


def check(crate: Path):
    src = crate / "src"
    if not src.is_dir():
        return []
    mods = modules(src)
    # (parent module) -> {child -> {child it imports}}
    layers, evidence = {}, {}
    for here, f in mods.items():
        for p in imports(f.read_text()):
            there = resolve(p, here, mods, f.name == "mod.rs")
            if there is None or there == here:
                continue
            n = 0
            while n < min(len(here), len(there)) and here[n] == there[n]:
                n += 1
            if n == len(here) or n == len(there):
                continue  # an ancestor or a descendant: structure, not an edge
            parent, a, b = here[:n], here[n], there[n]
            layers.setdefault(parent, {}).setdefault(a, set()).add(b)
            evidence.setdefault((parent, a, b), f"{f.relative_to(ROOT)} uses {p}")
    problems = []
    for parent, edges in layers.items():
        nodes = set(edges) | {m for ms in edges.values() for m in ms}
        cycle = find_cycle(nodes, edges)
        if cycle:
            where = "::".join(("crate",) + parent)
            steps = [evidence[(parent, a, b)] for a, b in zip(cycle, cycle[1:])]
            problems.append(f"{crate.name}: cycle in {where}: {' -> '.join(cycle)}\n    " + "\n    ".join(steps))
    return problems


def main():
    crates = [Path(a).resolve() for a in sys.argv[1:]] or [ROOT / c for c in CRATES if (ROOT / c).is_dir()]
    problems = [p for c in crates for p in check(c)]
    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    print(f"no module cycles in {len(crates)} crates")


if __name__ == "__main__":
    main()
