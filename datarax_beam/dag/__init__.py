"""The pipeline DAG: `from_source`, `OperatorNode`, ``>>``, ``.batch``, ``.shuffle``."""

from datarax_beam.dag.nodes import BatchNode, OperatorNode, ShuffleNode
from datarax_beam.dag.pipeline import Pipeline, from_source

__all__ = ["BatchNode", "OperatorNode", "Pipeline", "ShuffleNode", "from_source"]
