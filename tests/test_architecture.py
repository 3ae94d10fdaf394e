"""The layout shows the flow, and the flow only goes one way.

batch -> sql -> plan -> kernels -> codegen -> exec (the engine) -> processors -> io ->
server: a module imports only from its own layer or the layers before it, no import
cycle exists anywhere in ``velokern/`` (imports inside functions count; imports under
``if TYPE_CHECKING:`` do not run and do not count), and no module assigns another
object's private fields."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "velokern"

#: layers in flow order: a module may import from its own layer and the ones before it
LAYERS = [
    ["velokern._version", "velokern._shim", "velokern.config", "velokern.cachedir",
     "velokern.checkpoint"],
    ["velokern.batch", "velokern.types", "velokern.pool", "velokern.datagen"],
    ["velokern.aggregates"],
    ["velokern.plan"],
    ["velokern.sql"],
    ["velokern.kernels"],
    ["velokern.codegen"],
    ["velokern.exec"],
    ["velokern.processors"],
    ["velokern.api"],
    ["velokern.io"],
    ["velokern.server", "velokern.distributed"],
    ["velokern.bench", "velokern.cli", "velokern.__main__", "velokern"],
]

#: writes to a private field of an object that is not ``self``/``cls``: (file, variable,
#: why it is the module's own object)
OWN_PRIVATE_WRITES = {
    ("batch.py", "b"): "RecordBatch._trusted fills the instance it made with cls.__new__",
}


def _modules() -> dict[str, Path]:
    mods = {}
    for p in ROOT.rglob("*.py"):
        parts = p.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = p
    mods["velokern._shim"] = ROOT / "_shim.pyx"
    return mods


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
            for c in n.body:
                skip.update(id(x) for x in ast.walk(c))
    return skip


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Every velokern module each module imports (submodules resolved)."""
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        if path.suffix != ".py":
            graph[name] = set()
            continue
        tree = ast.parse(path.read_text())
        skip = _type_checking_nodes(tree)
        deps = set()
        for n in ast.walk(tree):
            if id(n) in skip:
                continue
            if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("velokern"):
                for a in n.names:
                    sub = f"{n.module}.{a.name}"
                    deps.add(sub if sub in mods else n.module)
            elif isinstance(n, ast.Import):
                deps.update(a.name for a in n.names if a.name.startswith("velokern"))
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def _layer(name: str) -> int:
    best, rank = -1, None
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    if rank is None:
        raise AssertionError(f"{name} is in no layer of tests/test_architecture.py")
    return rank


def test_no_import_cycle():
    graph = _imports(_modules())
    cycles, state, stack = [], {}, []

    def visit(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                cycles.append(" -> ".join(stack[stack.index(v):] + [v]))
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_imports_follow_the_flow():
    graph = _imports(_modules())
    back = [f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})"
            for m, deps in sorted(graph.items()) for d in sorted(deps)
            if _layer(d) > _layer(m)]
    assert not back, "imports back up the flow:\n" + "\n".join(back)


def test_every_module_has_a_layer():
    for m in _modules():
        _layer(m)


def test_no_writes_to_private_fields_of_other_objects():
    bad = []
    for path in ROOT.rglob("*.py"):
        for n in ast.walk(ast.parse(path.read_text())):
            targets = n.targets if isinstance(n, ast.Assign) else (
                [n.target] if isinstance(n, (ast.AugAssign, ast.AnnAssign)) else [])
            for t in targets:
                for a in ast.walk(t):
                    if not (isinstance(a, ast.Attribute) and isinstance(a.ctx, ast.Store)
                            and a.attr.startswith("_") and not a.attr.startswith("__")):
                        continue
                    owner = ast.unparse(a.value)
                    if owner in ("self", "cls") or (path.name, owner) in OWN_PRIVATE_WRITES:
                        continue
                    bad.append(f"{path.relative_to(ROOT.parent)}:{n.lineno}: "
                               f"{ast.unparse(t)}")
    assert not bad, "private fields written from outside:\n" + "\n".join(bad)
