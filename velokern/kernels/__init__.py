"""numba kernels: scalar helpers, the group-by hash table, aggregates, and the code
generator that fuses a whole query into per-partition kernels."""
