"""The code generator: a bound query fused into numba kernel source (see
:mod:`velokern.kernels.codegen` until its parts move here)."""

from velokern.kernels.codegen import (
    PF_AHEAD,
    PF_MIN_SLOTS,
    KernelSpec,
    OutCol,
    StateArray,
    generate,
)

__all__ = ["PF_AHEAD", "PF_MIN_SLOTS", "KernelSpec", "OutCol", "StateArray", "generate"]
