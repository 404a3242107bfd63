"""Turns an operator chain into one batched, jitted function with per-record PRNG keys."""

from datarax_beam.kernels.chain import ChainKernel
from datarax_beam.kernels.keys import record_key, record_keys

__all__ = ["ChainKernel", "record_key", "record_keys"]
