"""The layering of the package, enforced: every module sits in a layer, imports only from its
own layer or lower ones (function-level imports included), and no modules import each other in
a circle. The picture and the rules are in docs/architecture.md."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: bottom to top; a module may import from its own layer and the layers below it
LAYERS: list[list[str]] = [
    ["recstack", "recstack.progress", "recstack.configs"],
    ["recstack.data"],
    ["recstack.evaluation", "recstack.features", "recstack.losses", "recstack.content"],
    ["recstack.distributed", "recstack.training"],
    ["recstack.models"],
    ["recstack.index", "recstack.export"],
    ["recstack.pipeline", "recstack.abtest"],
    ["recstack.serving"],
    ["recstack.workflow"],
    ["recstack.cli", "recstack.__main__"],
]


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None
    for i, names in enumerate(LAYERS):
        for n in names:
            if (module == n or module.startswith(n + ".")) and (best is None or len(n) > best[1]):
                best = (i, len(n))
    return None if best is None else best[0]


def modules() -> dict[str, Path]:
    out = {}
    for p in (SRC / "recstack").rglob("*.py"):
        name = ".".join(p.with_suffix("").relative_to(SRC).parts)
        out[name.removesuffix(".__init__")] = p
    return out


def imports(path: Path, top_level_only: bool) -> list[tuple[str, int]]:
    """(imported recstack module, line) of a file; with `top_level_only`, only the imports that
    run when the module is imported (not those inside functions)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = []
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, node.lineno))
            out += [(f"{node.module}.{a.name}", node.lineno) for a in node.names]
    return [(m, line) for m, line in out if m.startswith("recstack")]


def test_every_module_has_a_layer():
    missing = [m for m in modules() if layer_of(m) is None]
    assert not missing, f"modules in no layer (add them to LAYERS and docs/architecture.md): {missing}"


def test_no_import_runs_up_the_layers():
    ups = []
    for mod, path in modules().items():
        src = layer_of(mod)
        for target, line in imports(path, top_level_only=False):
            t = layer_of(target)
            if t is not None and src is not None and t > src:
                ups.append(f"{path.relative_to(SRC.parent)}:{line}: {mod} (layer {src}) imports {target} (layer {t})")
    assert not ups, "\n".join(ups)


def test_no_import_cycles():
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for target, _ in imports(path, top_level_only=True):
            # `from pkg import name` may name a submodule: resolve to the longest known module
            while target not in mods and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in mods and target != mod:
                graph[mod].add(target)
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
            # a package importing its own submodules (its face) is not a cycle of its own
            real = [c for c in comp if not any(o != c and o.startswith(c + ".") for o in comp)]
            if len(comp) > 1 and len(real) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("bad", ["recstack.workflow.experiment", "recstack.cli"])
def test_the_check_catches_an_upward_import(tmp_path, bad):
    """The rule itself: a models-layer file importing from a higher layer is reported."""
    f = tmp_path / "m.py"
    f.write_text(f"def f():\n    from {bad} import x\n")
    assert any(layer_of(t) > layer_of("recstack.models.mf") for t, _ in imports(f, top_level_only=False))
