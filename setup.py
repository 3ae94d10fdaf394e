"""Build the Cython shim; everything else is in pyproject.toml."""

import os
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

# OpenMP for the threaded bucketing (bucket_by_keys); the shim builds without it where
# the compiler lacks it, and then buckets on one thread
OPENMP = [] if os.environ.get("VELOKERN_NO_OPENMP") or sys.platform == "darwin" \
    else ["-fopenmp"]

extensions = [
    Extension(
        "velokern._shim",
        ["velokern/_shim.pyx"],
        extra_compile_args=["-O3", *OPENMP],
        extra_link_args=OPENMP,
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)
