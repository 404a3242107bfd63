import numpy as np
import pytest

from datarax_beam.dag.nodes import (
    BatchNode,
    OperatorNode,
    ShuffleNode,
    as_operator,
    check_positive_int,
)
from datarax_beam.operators import ElementOperator, ElementOperatorConfig


def identity(element, key):
    return element


def test_operator_node_wraps_an_operator():
    op = ElementOperator(ElementOperatorConfig(), fn=identity)
    node = OperatorNode(op)
    assert node.operator is op and repr(node) == "OperatorNode(identity)"
    assert as_operator(node) is op and as_operator(op) is op


def test_operator_node_rejects_non_operators():
    with pytest.raises(TypeError, match=r"OperatorNode expects an operator.*got function: <function identity"):
        OperatorNode(identity)


@pytest.mark.parametrize("stage, shown", [("resize", "str: 'resize'"), (3, "int: 3"), (identity, "function: <function")])
def test_as_operator_names_what_arrived(stage, shown):
    with pytest.raises(TypeError, match=rf"`>>` expects an OperatorNode or an operator, got {shown}"):
        as_operator(stage)


def test_batch_node_normalizes_and_validates():
    node = BatchNode(np.int64(4))
    assert type(node.batch_size) is int and node.batch_size == 4 and node.drop_remainder is False
    with pytest.raises(ValueError, match=r"`batch_size` must be >= 1, got 0"):
        BatchNode(0)
    with pytest.raises(TypeError, match=r"`batch_size` must be an int >= 1, got 2.5"):
        BatchNode(2.5)
    with pytest.raises(TypeError, match=r"`drop_remainder` must be a bool, got 'yes'"):
        BatchNode(2, drop_remainder="yes")


def test_shuffle_node_validates():
    assert ShuffleNode(np.int32(8), seed=np.int64(3)) == ShuffleNode(8, 3)
    with pytest.raises(ValueError, match=r"`buffer_size` must be >= 1, got -2"):
        ShuffleNode(-2)
    with pytest.raises(TypeError, match=r"`seed` must be an int, got '1'"):
        ShuffleNode(4, seed="1")
    with pytest.raises(TypeError, match=r"`seed` must be an int, got False"):
        ShuffleNode(4, seed=False)


def test_check_positive_int():
    assert check_positive_int("n", np.int16(2)) == 2
    with pytest.raises(TypeError, match=r"`n` must be an int >= 1, got True"):
        check_positive_int("n", True)
