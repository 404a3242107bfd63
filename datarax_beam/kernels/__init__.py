"""Turns an operator chain into batched host and jitted JAX segments with per-record PRNG keys."""

from datarax_beam.kernels.chain import ChainKernel, Dispatched
from datarax_beam.kernels.errors import NarrowingError, OperatorError, PerRecordPathWarning
from datarax_beam.kernels.keys import record_key, record_key_data, record_keys
from datarax_beam.kernels.opaque import NeedsRecordPath

__all__ = [
    "ChainKernel",
    "Dispatched",
    "NarrowingError",
    "NeedsRecordPath",
    "OperatorError",
    "PerRecordPathWarning",
    "record_key",
    "record_key_data",
    "record_keys",
]
