"""Slow pure-Python twins of the numba kernels (numbagg/bottleneck style), for the tests.

One module per kernel module: :mod:`.scalar`, :mod:`.hashtable`, :mod:`.windows`,
:mod:`.order`. Each twin computes what its kernel's docstring says in the plainest way
(exact integers, Fractions and Decimals, sorts, dicts), not by transcribing the kernel's
loop, so the fast version can be held to it. Which twin belongs to which kernel is said
in one place, the ``TWINS`` table of ``tests/test_twins.py``; a kernel without a twin
fails there. Every twin is re-exported here (``slow.int_div``, ``slow.merge_runs``, ...).
"""

from velokern.kernels.slow.hashtable import *  # noqa: F403
from velokern.kernels.slow.hashtable import __all__ as _hashtable_all
from velokern.kernels.slow.order import *  # noqa: F403
from velokern.kernels.slow.order import __all__ as _order_all
from velokern.kernels.slow.scalar import *  # noqa: F403
from velokern.kernels.slow.scalar import __all__ as _scalar_all
from velokern.kernels.slow.windows import *  # noqa: F403
from velokern.kernels.slow.windows import __all__ as _windows_all

__all__ = [*_scalar_all, *_hashtable_all, *_windows_all, *_order_all]
assert len(set(__all__)) == len(__all__), "two twins of the same name"
