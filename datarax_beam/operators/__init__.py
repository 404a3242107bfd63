"""Operators: per-record transforms that kernels batch, jit and key."""

from datarax_beam.core.operator import OperatorConfig, OperatorModule
from datarax_beam.operators.element_operator import ElementOperator, ElementOperatorConfig
from datarax_beam.operators.host import HostOperator, host_rng

__all__ = [
    "ElementOperator",
    "ElementOperatorConfig",
    "HostOperator",
    "OperatorConfig",
    "OperatorModule",
    "host_rng",
]
