"""Calls from a ``prange`` wrapper to a per-partition kernel through its address.

When one numba function calls another directly, numba links the callee's LLVM module
into the caller's and optimizes the whole again at -O3: a parallel wrapper around a
large ``batch_part`` kernel took as long to compile as the kernel itself (~10 s for a
windowed query). The wrappers instead receive the kernel's machine-code address as an
int64 argument and call it with numba's own calling convention (as numba does for a
first-class function with a JIT address): the wrapper compiles in about a second, its
cache entry does not depend on where the kernel was loaded, and V1 and V2 run the very
same compiled kernel.

:func:`part_address` gives the address of a kernel compiled for exactly the argument
types the wrapper passes (compiling or loading that signature from the cache when new)
and checks its return type, so the call cannot be made with a mismatched signature.
"""

from __future__ import annotations

import threading

from numba import typeof, types
from numba._dispatcher import compute_fingerprint
from numba.core import cgutils
from numba.extending import intrinsic

_PAIR = types.UniTuple(types.int64, 2)


def _caller(restype):
    @intrinsic
    def call(typingctx, addr, args):
        if not isinstance(addr, types.Integer) or not isinstance(args, types.BaseTuple):
            return None
        argtys = tuple(args.types)

        def codegen(context, builder, signature, llargs):
            fnty = context.call_conv.get_function_type(restype, argtys)
            fn = builder.inttoptr(llargs[0], fnty.as_pointer())
            vals = [builder.extract_value(llargs[1], i) for i in range(len(argtys))]
            status, res = context.call_conv.call_function(builder, fn, restype, argtys, vals)
            with cgutils.if_unlikely(builder, status.is_error):
                context.call_conv.return_status_propagate(builder, status)
            return res

        return restype(addr, args), codegen

    return call


#: ``call_pair(addr, (args...))``: call a kernel returning (int64, int64)
call_pair = _caller(_PAIR)
#: ``call_int(addr, (args...))``: call a kernel returning an int64
call_int = _caller(types.int64)

_RESTYPES = {"pair": _PAIR, "int": types.int64}
_ADDRESSES: dict = {}
_LOCK = threading.Lock()


def part_address(part, returns: str, wrapper_args: tuple, part_args) -> int:
    """Address of ``part`` (a numba dispatcher) compiled for the types of the values
    ``part_args()`` returns: the arguments the wrapper, called with ``wrapper_args``,
    passes to it. Cached by the types of ``wrapper_args`` (they fix the part's types)."""
    key = (part, compute_fingerprint(wrapper_args))
    addr = _ADDRESSES.get(key)
    if addr is not None:
        return addr
    with _LOCK:
        sig = tuple(typeof(v) for v in part_args())
        part.compile(sig)
        cres = part.overloads[sig]
        if cres.signature.return_type != _RESTYPES[returns]:
            raise TypeError(f"{part.__name__} returns {cres.signature.return_type}, the "
                            f"parallel wrapper expects {_RESTYPES[returns]}")
        addr = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
        _ADDRESSES[key] = addr  # the key holds the dispatcher: its code stays loaded
        return addr
