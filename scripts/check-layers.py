#!/usr/bin/env python3
"""Checks that the volume manager's layers depend on each other one way only.

Reads every `.rs` file under `engine/src/volume/` (test code excluded: the `tests/` folder and
everything after a file's `#[cfg(test)]` line), collects the volume modules each one names
(`use super::…`, `use crate::volume::…`, `super::super::…`, `self::…`, paths inside braces,
and inline paths such as `super::ops::build_map(…)`), and maps each file to its layer: the
first folder under `volume/` (`model`, `ondisk`, `drl`, `io`, `copy`, `manager`, `api`), or the file
name for the files directly in `volume/` (`error`; `mod.rs` is the public facade and exempt).

Prints the layer graph (`--dot` for Graphviz, `--modules` for the module graph as well) and
exits 1 if a layer imports a higher one, if a layer imports the facade (`crate::volume::X`
where `X` is not a layer), or if layers form a cycle; 2 on usage errors.

It also checks the engine's own layers, `reactor` <- `bdev` <- `drivers` <- `volume` (the
reactor knows no bdev; the bdev layer knows no driver; drivers know no volume), from the
`crate::…` paths of each top-level folder of `engine/src/` (test files excluded).

Usage: scripts/check-layers.py [--dot] [--modules] [--legacy] [VOLUME_DIR]
"""

import os
import re
import sys

# Lower rank = lower layer. An edge must go from a higher rank to a lower or equal one, and
# two different layers of equal rank must not import each other (none do today).
RANKS = {
    "model": 0,    # object model, block mapping, allocation: pure, no I/O
    "ondisk": 1,   # private-region format, disk I/O, choosing the config copy
    "drl": 2,      # dirty-region log: its on-disk bitmap format, the region marks writes set
    "io": 3,       # volume bdev, published map, per-reactor channel, barrier, fences
    "error": 4,    # the volume error type (wraps lower layers' errors)
    "copy": 5,     # long-running copies: task registry, copy engine, read-repair queue
    "manager": 6,  # disk groups, commits, events, volume/plex operations
    "api": 7,      # JSON-RPC methods, SPDK raid mapping, listings
}
FACADE = "mod"

USE_RE = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?use\s+([^;]*);", re.S | re.M)
INLINE_RE = re.compile(r"\b((?:crate::volume|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+)")


def module_path(root, path):
    """`volume/io/channel.rs` -> ['io', 'channel']; `volume/io/mod.rs` -> ['io']."""
    rel = os.path.relpath(path, root)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    return rel


def expand(tree):
    """Expands `a::{b, c::{d, e}}` into ['a::b', 'a::c::d', 'a::c::e']."""
    tree = re.sub(r"\s+", "", tree)
    out = []

    def walk(prefix, s):
        # split s at top-level commas
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
        for p in parts:
            if not p:
                continue
            if "{" in p:
                head, rest = p.split("{", 1)
                walk(prefix + head, rest[: rest.rindex("}")])
            else:
                out.append(prefix + p.split(" as ")[0])

    walk("", tree)
    return out


def resolve(me, is_mod, path):
    """Resolves a path as seen from module `me` to a module path under volume, or None."""
    parts = [p for p in path.split("::") if p]
    if not parts:
        return None
    if parts[0] not in ("crate", "super", "self"):
        return None  # std, other crates
    if parts[0] == "crate":
        if parts[1:2] != ["volume"]:
            return None
        return parts[2:]
    base = list(me)  # `self`; each `super` is one level up (a file is a module too)
    if parts[0] == "self":
        parts = parts[1:]
    while parts and parts[0] == "super":
        if not base:
            return None  # above volume/
        base.pop()
        parts = parts[1:]
    return base + parts


# `--legacy`: the layer each file of the flat layout (before issue 11) would belong to, to
# show that layout's graph and its violations.
LEGACY = {
    "objects": "model", "layout": "model", "alloc": "model",
    "ondisk": "ondisk", "disk": "ondisk", "configdb": "ondisk",
    "driver": "io", "channel": "io", "fence": "io",
    "task": "copy", "resync": "copy", "repair": "copy",
    "manager": "manager", "ops": "manager", "layered": "manager", "reshape": "manager",
    "rpc": "api", "raid": "api", "print": "api",
}
legacy = False


def layer_of(modpath):
    if not modpath:
        return FACADE
    if legacy:
        return LEGACY.get(modpath[0], modpath[0])
    return modpath[0]


def known_modules(root):
    """Every module path under volume/, as tuples."""
    mods = set()
    for dirpath, _, filenames in os.walk(root):
        for f in filenames:
            if f.endswith(".rs"):
                mods.add(tuple(module_path(root, os.path.join(dirpath, f))))
    return mods


def code_of(path):
    """A file's text without its test module (everything from `#[cfg(test)] mod`) and without
    comments (doc links name modules without depending on them)."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    cut = re.search(r"^\s*#\[cfg\(test\)\]\s*\n\s*mod\s+\w+", text, re.M)
    if cut:
        text = text[: cut.start()]
    return re.sub(r"//[^\n]*", "", text)


def scan(root):
    mods = known_modules(root)
    edges = {}  # (from_module, to_module) -> first "file:line"
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel.split(os.sep)[0] == "tests":
            continue
        for f in sorted(filenames):
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            text = code_of(path)
            me = module_path(root, path)
            is_mod = f == "mod.rs"
            found = []
            for m in USE_RE.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                for p in expand(m.group(1)):
                    found.append((p, line))
            for m in INLINE_RE.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                found.append((m.group(1), line))
            for p, line in found:
                target = resolve(me, is_mod, p)
                if target is None:
                    continue
                src_mod = "::".join(me) or FACADE
                if not target:
                    continue
                # The module named: the longest prefix of the path that is a module.
                n = len(target)
                while n > 0 and tuple(target[:n]) not in mods:
                    n -= 1
                if n == 0:
                    # An item of the facade (`crate::volume::X`) or a missing module.
                    dst_mod = FACADE
                else:
                    dst_mod = "::".join(target[:n])
                key = (src_mod, dst_mod)
                edges.setdefault(key, f"{os.path.relpath(path, root)}:{line}")
    return edges


# The engine's top-level modules, lowest first (engine.rs and lib.rs tie them together).
ENGINE_RANKS = {"reactor": 0, "bdev": 1, "drivers": 2, "volume": 3}
CRATE_RE = re.compile(r"\bcrate::([a-z_]+)")


def check_engine(src):
    """Returns (edges, violations) between the engine's top-level modules."""
    edges, bad = {}, []
    for top in ENGINE_RANKS:
        for dirpath, _, filenames in os.walk(os.path.join(src, top)):
            if "tests" in os.path.relpath(dirpath, src).split(os.sep):
                continue
            for f in sorted(filenames):
                if not f.endswith(".rs") or f in ("tests.rs", "test_support.rs"):
                    continue
                path = os.path.join(dirpath, f)
                text = code_of(path)
                for m in CRATE_RE.finditer(text):
                    dst = m.group(1)
                    if dst == top or dst not in ENGINE_RANKS:
                        continue
                    line = text.count("\n", 0, m.start()) + 1
                    edges.setdefault((top, dst), f"{os.path.relpath(path, src)}:{line}")
    for (a, b), where in sorted(edges.items()):
        if ENGINE_RANKS[b] > ENGINE_RANKS[a]:
            bad.append(f"engine: {a} -> {b}: upward edge, {a} is below {b} ({where})")
    return edges, bad


def main(argv):
    global legacy
    legacy = "--legacy" in argv
    dot = "--dot" in argv
    modules = "--modules" in argv
    args = [a for a in argv if not a.startswith("--")]
    here = os.path.dirname(os.path.abspath(__file__))
    root = args[0] if args else os.path.join(here, "..", "engine", "src", "volume")
    if not os.path.isdir(root):
        print(f"no such directory: {root}", file=sys.stderr)
        return 2
    edges = scan(root)

    layer_edges = {}
    for (s, d), where in edges.items():
        ls, ld = layer_of(s.split("::")), layer_of(d.split("::"))
        if ls == ld:
            continue
        layer_edges.setdefault((ls, ld), where)

    bad = []
    for (ls, ld), where in sorted(layer_edges.items()):
        if ls == FACADE:
            continue  # the facade re-exports what other crates use
        if ld == FACADE or ld not in RANKS:
            bad.append(f"{ls} -> {ld}: names the facade or an unknown layer ({where})")
        elif ls not in RANKS:
            bad.append(f"{ls} -> {ld}: {ls} is not a known layer ({where})")
        elif RANKS[ld] > RANKS[ls]:
            bad.append(f"{ls} -> {ld}: upward edge, {ls} is below {ld} ({where})")
    # Cycles between layers (also catches equal-rank pairs importing each other).
    graph = {}
    for ls, ld in layer_edges:
        graph.setdefault(ls, set()).add(ld)
    state = {}

    def visit(n, stack):
        state[n] = 1
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                bad.append("cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
            elif m not in state:
                visit(m, stack + [m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])

    order = sorted(set(RANKS) | {FACADE}, key=lambda l: RANKS.get(l, 99))
    if dot:
        print("digraph volume_layers {")
        print("  rankdir=BT;")
        for (ls, ld) in sorted(layer_edges):
            print(f'  "{ls}" -> "{ld}";')
        if modules:
            for (s, d) in sorted(edges):
                if s != d:
                    print(f'  "{s}" -> "{d}" [style=dotted];')
        print("}")
    else:
        print("volume layers (lowest first) and the layers each imports:")
        for l in order:
            deps = sorted({d for (s, d) in layer_edges if s == l}, key=lambda x: RANKS.get(x, 99))
            label = "mod.rs (facade)" if l == FACADE else l
            print(f"  {label:16} -> {', '.join(deps) if deps else '(nothing)'}")
        if modules:
            print("modules:")
            for s in sorted({s for s, _ in edges}):
                deps = sorted({d for (x, d) in edges if x == s and d != s})
                print(f"  {s:24} -> {', '.join(deps)}")
    if not legacy:
        src = os.path.dirname(os.path.normpath(root))
        eng_edges, eng_bad = check_engine(src)
        bad += eng_bad
        if not dot:
            print("engine modules (lowest first) and the modules each imports:")
            for l in ENGINE_RANKS:
                deps = sorted({d for (s_, d) in eng_edges if s_ == l}, key=ENGINE_RANKS.get)
                print(f"  {l:16} -> {', '.join(deps) if deps else '(nothing)'}")
    if bad:
        print("layering violations:", file=sys.stderr)
        for b in bad:
            print("  " + b, file=sys.stderr)
        return 1
    print("ok: every edge points down, no cycle between layers", file=sys.stderr if dot else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
