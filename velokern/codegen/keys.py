"""Grouping keys: their int64 grouping bits, the hash of those bits, the probe of the
hash table that finds (or makes) a row's group, the direct map that skips the probe
for small string/bool keys, and the ``key_bits`` kernel V2 partitions by.

The hash table, the prefetcher and V2's partitioner all hash the same bits with the
same :func:`hash_lines`: every kernel of a query must compute a key's hash alike.

GROUP BY (and ROWS window PARTITION BY) keys that are all string or boolean columns
have small dense domains (codes): a direct map from the combined code to the group id
(``dmap``, with per-key sizes and strides in ``ddims``) replaces hashing for rows of
known groups. The hash table stays the source of truth; the map is a cache the engine
resizes as dictionaries grow.
"""

from __future__ import annotations

from velokern.batch import STRING
from velokern.codegen.common import GROUP, indent, prologue_inputs
from velokern.codegen.expressions import ExprGen
from velokern.codegen.spec import KernelSpec
from velokern.kernels.layout import DIM_SIZE, DIM_STRIDE
from velokern.plan import BOOL, BoundQuery, Col, Expr, WinRef, is_float, is_int, is_time


def value_is_bits(t: str) -> bool:
    """A key of type ``t`` has its value as its int64 grouping bits (see
    :func:`bits_code`): integers, times and string codes (not floats, whose bits are
    normalised, nor bools, held as uint8)."""
    return t == STRING or is_int(t) or is_time(t)


def bits_code(g: ExprGen, e: Expr, t: str, v: str) -> str:
    """int64 grouping bits of a value: floats normalised, everything else as int64."""
    if is_float(t):
        assert isinstance(e, Col)
        k = g.spec.inputs.index((e.name, "bits"))
        return f"float_key_bits({v}, c{k}[i])"
    return f"np.int64({v})"


def key_bits(g: ExprGen, e: Expr, t: str) -> tuple[str, str, str]:
    """Emit the int64 grouping bits of key ``e`` (0 when null) into ``g``; returns (bits
    variable, value code, null code)."""
    v, n = g.gen(e)
    kb = g.tmp()
    g.emit(f"{kb} = {bits_code(g, e, t, v)} if not {n} else np.int64(0)")
    return kb, v, n


def row_keys(g: ExprGen, keys) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Emit the grouping bits of the row's ``keys`` (expression, type) into ``g``; returns
    each key's (value, null) and (bits, null) codes. A window start key is the window
    ``ws`` the loop is on."""
    vals, kbs = [], []
    for e, t in keys:
        if isinstance(e, WinRef):
            vals.append(("ws", "False"))
            kbs.append(("ws", "False"))
            continue
        kb, v, n = key_bits(g, e, t)
        vals.append((v, n))
        kbs.append((kb, n))
    return vals, kbs


def hash_lines(kbs: list[str]) -> list[str]:
    """``h`` = the group-by tables' hash of key bits ``kbs`` (the one definition; the
    tables keep it, so every kernel of a query must compute it alike)."""
    return ["h = np.uint64(0)", *(f"h = fold(h, {kb})" for kb in kbs), "h = mix64(h)"]


def unique_hash(kbs: list[tuple[str, str]]) -> bool:
    """One key that cannot be null: its hash (``mix64`` of its bits) is a bijection, so
    a probe that finds the hash has found the key."""
    return len(kbs) == 1 and kbs[0][1] == "False"


def probe_lines(kbs: list[tuple[str, str]]) -> list[str]:
    """``g`` = the group of the key (bits, null flag) pairs ``kbs`` in the hash table,
    inserted as group ``ng`` when new (no keys: the one group of a global aggregate,
    its key bits a single 0)."""
    nulls = any(n != "False" for _, n in kbs)
    kv = "".join(f"np.int64({kb}), " for kb, _ in kbs) or "np.int64(0), "
    kn = "".join(f"np.uint8({n}), " for _, n in kbs) if nulls else "np.uint8(0), "
    return [*hash_lines([kb for kb, _ in kbs]),
            f"g = probe(table, hashes, kbits, knull, ({kv}), ({kn}), h, ng, "
            f"{unique_hash(kbs)}, {nulls})"]


def uses_direct_map(bq: BoundQuery) -> bool:
    """The keys are all string/bool columns: their codes index the direct map."""
    return len(bq.keys) > 0 and all(isinstance(e, Col) and t in (STRING, BOOL)
                                    for e, t in zip(bq.keys, bq.key_types))


def direct_lookup(g: ExprGen, kbs: list[tuple[str, str]]) -> None:
    """``g`` = the group of the row's key codes ``kbs`` from the direct map; a code the
    map cannot hold yet, or a key not in it, goes through the hash table (the probe) and
    is then remembered in the map."""
    g.emit("didx = 0\ndok = direct_on")
    for j, (kb, n) in enumerate(kbs):
        cj = g.tmp()
        g.emit(f"{cj} = ({kb} + 1) if not {n} else np.int64(0)")
        g.emit(f"if {cj} >= dsize{j}:\n    dok = False")
        g.emit(f"didx += {cj} * dstride{j}")
    g.emit("g = dmap[nonneg(didx)] if dok else -1")  # codes + 1 >= 0, strides > 0
    g.emit("if g < 0:")
    g.emit_block(probe_lines(kbs), 4)
    g.emit("    if dok:\n        dmap[didx] = g")


def group_lookup(g: ExprGen, kbs: list[tuple[str, str]], direct: bool) -> None:
    """Emit the lookup of the row's group ``g`` (direct map or hash table probe)."""
    if direct:
        direct_lookup(g, kbs)
    else:
        for ln in probe_lines(kbs):
            g.emit(ln)
    g.emit(GROUP)


def direct_prologue(spec: KernelSpec) -> list[str]:
    """Locals the direct lookups read: the map's on/off flag and each key's size and
    stride, loaded once (read from ``ddims`` in the row loop they were reloaded on every
    row, since stores to state arrays may alias it: S2 ~10% slower)."""
    lines = [f"direct_on = meta[{spec.meta_cols['direct']}] != 0"]
    for j in range(spec.num_keys):
        lines += [f"dsize{j} = ddims[{DIM_SIZE}, {j}]", f"dstride{j} = ddims[{DIM_STRIDE}, {j}]"]
    return lines


def key_bits_src(bq: BoundQuery, spec: KernelSpec, types, keys) -> list[str]:
    """``key_bits(C, M, R, n, out)``: the int64 grouping bits of ``keys`` (expression,
    type) for every row, which V2 hashes into partitions."""
    kb = ExprGen(bq, spec, types)
    for j, (ke, t) in enumerate(keys):
        kb.emit(f"out[{j}, i] = {key_bits(kb, ke, t)[0]}")
    src = ["@njit(**JIT)", "def key_bits(C, M, R, n, out):"]
    src += indent(prologue_inputs(spec), 4)
    src += indent(["for i in range(n):"], 4)
    src += indent(kb.lines or ["pass"], 8)
    src += ["    return 0"]
    return src


__all__ = ["bits_code", "direct_lookup", "direct_prologue", "group_lookup", "hash_lines",
           "key_bits", "key_bits_src", "probe_lines", "row_keys", "unique_hash", "uses_direct_map",
           "value_is_bits"]
