"""The layer rule of the engine (DESIGN.md's diagram), checked on the source with ``ast``.

Layers, bottom to top (a module may import its own layer and the layers below, never one above):

0. ``base``: ``engine.backend``, ``errors``, ``resources``, ``progress``, ``outputs``, ``assets`` (the one module
   that knows where the shipped ``assets/`` and the external data folder ``$ENGINE_DATA`` are), ``display``
   (NumPy windowing of images) and ``imageio`` (image files; uses ``display`` and ``outputs``).
1. ``geometry``: cameras, C-arm, poses.
2. ``volume`` | ``mesh`` | ``metrics`` (surface distances between meshes) | ``phantoms`` (the LLP26 pelvis and
   the pelvis CT phantom made from it: data built on meshes, used by the shape models above).
3. ``physics``.
4. ``simulate`` | ``simulator`` | ``xray_config`` (their physics settings), and the package ``engine`` itself (its
   ``__init__`` re-exports ``simulate``, ``Simulator``, ``XrayConfig``, ``Camera``, ``load_ct``, so it sits with
   them: ``import engine`` is for layer 4 and up).
5. ``ssm``.
6. ``recon`` | ``registration``.
7. ``torch`` | ``dataset``.
8. ``viewer``, ``cli`` and ``cli_*``, ``__main__``: user-facing.

Siblings (``|``) share a layer and may import each other, provided there is no cycle.

Rules checked here:
- no module of ``engine/`` imports a module of a higher layer: top-level imports and imports inside functions
  (lazy imports) alike; ``ALLOWED_UP`` lists the exceptions, each with its reason (none today);
- no import cycles between modules (strongly connected components of the module graph; an import of a package
  counts as an edge to its ``__init__``); ``KNOWN_CYCLES`` lists the ones not yet removed, each with its reason;
- no module reads outside the package and the user's arguments: no string literal naming ``shared`` (docstrings
  included), no ``"../"`` outside docstrings (which may show a user's relative path), no ``__file__`` and no
  ``.parents[...]`` walk up the tree, except in ``engine/assets.py``, the one module that
  may find the repository's ``assets/`` folder (next to the package; ``$ENGINE_ASSETS`` overrides it).  External
  data (the chest CT, the LLP26 fallback copy) is found through explicit arguments or ``$ENGINE_DATA``.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "engine"

LAYERS = [  # (rank, first component(s) below ``engine``)
    (0, ("backend", "errors", "resources", "progress", "outputs", "assets", "display", "imageio")),
    (1, ("geometry",)),
    (2, ("volume", "mesh", "metrics", "phantoms")),
    (3, ("physics",)),
    (4, ("simulate", "simulator", "xray_config", "")),  # "": the package engine/__init__.py
    (5, ("ssm",)),
    (6, ("recon", "registration")),
    (7, ("torch", "dataset")),
    (8, ("viewer", "cli", "__main__")),  # "cli": engine/cli.py and every engine/cli_*.py
]
RANK = {name: rank for rank, names in LAYERS for name in names}

# (importer, imported): an import of a higher layer that is allowed, and why.  Empty: none is.
ALLOWED_UP: dict = {}

# frozenset of modules in one import cycle: why it is still there (each import is lazy, inside a function, so
# the cycle does not break at import time; it still ties the modules together).
KNOWN_CYCLES: dict = {}

PATH_MODULE = "engine.assets"  # the one module that may locate files from its own position


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict:
    """{module name: path} of every module under engine/."""
    return {module_name(p): p for p in sorted(ENGINE.rglob("*.py"))}


def layer(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else ""
    if key.startswith("cli_"):  # every command-line module (cli_register, cli_shape, ...) is user-facing
        key = "cli"
    if key not in RANK:
        raise AssertionError(f"{module}: its layer is not assigned (add {key!r} to LAYERS in {__file__})")
    return RANK[key]


def _resolve(known: set, base: str, names) -> set:
    """Modules named by ``from base import names``: ``base.name`` where it is a module, else ``base``."""
    out = set()
    for n in names:
        out.add(f"{base}.{n}" if f"{base}.{n}" in known else base)
    return out


def imports(module: str, path: Path, known: set) -> list:
    """[(imported engine module, line)] of every import in the file, at any depth (functions too)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "engine" or a.name.startswith("engine."):
                    name = a.name
                    while name not in known:  # engine.x.y where y is a name: the module engine.x
                        name = name.rpartition(".")[0]
                    out.append((name, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = ".".join(base[:len(base) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            elif node.module and (node.module == "engine" or node.module.startswith("engine.")):
                base = node.module
            else:
                continue
            out += [(m, node.lineno) for m in _resolve(known, base, [a.name for a in node.names])]
    return out


def graph() -> dict:
    mods = modules()
    known = set(mods)
    return {m: imports(m, p, known) for m, p in mods.items()}


def test_every_module_has_a_layer():
    for m in modules():
        layer(m)


def test_no_module_imports_a_higher_layer():
    bad = []
    for m, edges in graph().items():
        for target, line in edges:
            if layer(target) > layer(m) and (m, target) not in ALLOWED_UP:
                bad.append(f"{m} (layer {layer(m)}) imports {target} (layer {layer(target)}) at line {line}")
    assert not bad, "imports of a higher layer:\n" + "\n".join(sorted(set(bad)))


def strongly_connected(g: dict) -> list:
    """Tarjan's strongly connected components of {node: successors} with more than one node (or a self loop)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        work = [(v, iter(g.get(v, ())))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        while work:
            node, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(g.get(w, ()))))
                    break
                if w in on:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    if len(comp) > 1 or node in g.get(node, ()):
                        out.append(frozenset(comp))

    for v in g:
        if v not in index:
            visit(v)
    return out


def test_strongly_connected_finds_cycles():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert sorted(map(sorted, strongly_connected(g))) == [["a", "b", "c"], ["e"]]


def test_no_import_cycles():
    g = {m: {t for t, _ in edges if t != m} for m, edges in graph().items()}
    cycles = [c for c in strongly_connected(g) if c not in KNOWN_CYCLES]
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(sorted(c)) for c in cycles)
    stale = [c for c in KNOWN_CYCLES if c not in strongly_connected(g)]
    assert not stale, f"cycles listed in KNOWN_CYCLES that no longer exist (remove them): {stale}"


def test_no_module_reads_outside_the_package():
    bad = []
    for m, path in modules().items():
        if m == PATH_MODULE:
            continue
        tree = ast.parse(path.read_text(), str(path))
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                v = node.value
                if v == "shared" or "shared/" in v or "/shared" in v or ("../" in v and id(node) not in docstrings):
                    bad.append(f"{where}: string {v[:60]!r} names a folder outside the package")
            elif isinstance(node, ast.Name) and node.id == "__file__":
                bad.append(f"{where}: __file__ (locate files through engine.assets or the caller's arguments)")
            elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) \
                    and node.value.attr == "parents":
                bad.append(f"{where}: .parents[...] walks up the tree")
    assert not bad, "\n".join(bad)


def line_counts() -> dict:
    """{layer: lines of code} of engine/ (for reports: ``python tests/test_layers.py``)."""
    out: dict = {}
    for m, p in modules().items():
        key = m.split(".")[1] if "." in m else "engine/__init__"
        out.setdefault((layer(m), key), 0)
        out[(layer(m), key)] += len(p.read_text().splitlines())
    return out


if __name__ == "__main__":
    total = 0
    for (rank, key), n in sorted(line_counts().items()):
        print(f"{rank} {key:<16} {n:6d}")
        total += n
    print(f"  {'total':<16} {total:6d}")
