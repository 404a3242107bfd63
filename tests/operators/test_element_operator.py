import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from datarax_beam import from_source
from datarax_beam.core.element import Element
from datarax_beam.operators import ElementOperator, ElementOperatorConfig, OperatorModule
from datarax_beam.sources import MemorySource, MemorySourceConfig

STOCHASTIC = ElementOperatorConfig(stochastic=True, stream_name="augment")


def add_one(element, key):
    return element.update_data({"x": element.data["x"] + 1})


def test_deterministic_operator_gets_no_key():
    seen = []

    def fn(element, key):
        seen.append(key)
        return element

    op = ElementOperator(ElementOperatorConfig(), fn=fn)
    assert isinstance(op, OperatorModule) and not op.stochastic and op.base_key_data is None
    op(Element({"x": 1}))
    assert seen == [None]
    assert op.name == "fn"


def test_applies_fn_to_one_element():
    op = ElementOperator(ElementOperatorConfig(stochastic=False), fn=add_one)
    assert int(op(Element({"x": jnp.int32(3)})).data["x"]) == 4


def test_stochastic_without_stream_name():
    with pytest.raises(ValueError, match=r"stochastic operator needs a `stream_name`.*stream_name=None"):
        ElementOperatorConfig(stochastic=True)


def test_stream_name_on_a_deterministic_operator():
    with pytest.raises(ValueError, match=r"`stream_name`='augment' was given to a deterministic operator"):
        ElementOperatorConfig(stochastic=False, stream_name="augment")


def test_stochastic_flag_must_be_a_bool():
    with pytest.raises(TypeError, match=r"`stochastic` must be a bool, got 1"):
        ElementOperatorConfig(stochastic=1)


def test_stochastic_without_rngs():
    with pytest.raises(ValueError, match=r"stream_name='augment' needs `rngs`.*got rngs=None"):
        ElementOperator(STOCHASTIC, fn=add_one)


def test_bad_rngs_config_and_fn():
    with pytest.raises(TypeError, match=r"`rngs` must be an nnx.Rngs, got int"):
        ElementOperator(STOCHASTIC, fn=add_one, rngs=0)
    with pytest.raises(TypeError, match=r"`config` must be an OperatorConfig.*got dict"):
        ElementOperator({"stochastic": False}, fn=add_one)
    with pytest.raises(TypeError, match=r"`fn` must be callable as fn\(element, key\), got 3"):
        ElementOperator(ElementOperatorConfig(), fn=3)


def test_fn_returning_a_dict_is_rejected_with_name_and_value():
    op = ElementOperator(ElementOperatorConfig(), fn=lambda e, k: dict(e.data), name="as_dict")
    with pytest.raises(TypeError, match=r"Operator 'as_dict': fn must return an Element.*got dict: \{'x': 1\}"):
        op(Element({"x": 1}))


@pytest.mark.parametrize("text", [False, True], ids=["jitted", "per_record"])
def test_fn_returning_a_non_element_fails_in_a_pipeline(text):
    data = {"x": np.arange(4, dtype=np.float32)}
    if text:
        data["t"] = ["a", "b", "c", "d"]
    op = ElementOperator(ElementOperatorConfig(), fn=lambda e, k: e.data["x"], name="bare")
    pipeline = from_source(MemorySource(MemorySourceConfig(), data), batch_size=4) >> op
    with pytest.raises(TypeError, match=r"Operator 'bare': fn must return an Element"):
        next(iter(pipeline))


def test_same_seed_same_base_key_and_different_seed_differs():
    a = ElementOperator(STOCHASTIC, fn=add_one, rngs=nnx.Rngs(augment=0))
    b = ElementOperator(STOCHASTIC, fn=add_one, rngs=nnx.Rngs(augment=0))
    c = ElementOperator(STOCHASTIC, fn=add_one, rngs=nnx.Rngs(augment=1))
    assert a.base_key_data.dtype == np.uint32
    np.testing.assert_array_equal(a.base_key_data, b.base_key_data)
    assert not np.array_equal(a.base_key_data, c.base_key_data)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_operators_sharing_rngs_get_independent_keys():
    rngs = nnx.Rngs(augment=0)
    first = ElementOperator(STOCHASTIC, fn=add_one, rngs=rngs)
    second = ElementOperator(STOCHASTIC, fn=add_one, rngs=rngs)
    assert not np.array_equal(first.base_key_data, second.base_key_data)


def test_stream_name_is_folded_in_and_default_stream_is_a_fallback():
    via_default = ElementOperator(STOCHASTIC, fn=add_one, rngs=nnx.Rngs(0))
    other_stream = ElementOperator(
        ElementOperatorConfig(stochastic=True, stream_name="dropout"), fn=add_one, rngs=nnx.Rngs(0)
    )
    assert via_default.base_key_data.shape == (2,)
    assert not np.array_equal(via_default.base_key_data, other_stream.base_key_data)


def test_stochastic_fn_receives_a_typed_key():
    keys = []

    def fn(element, key):
        keys.append(key)
        return element.update_data({"u": jax.random.uniform(key)})

    op = ElementOperator(STOCHASTIC, fn=fn, rngs=nnx.Rngs(augment=0))
    src = MemorySource(MemorySourceConfig(), {"x": np.zeros(3, np.float32)})
    out = next(iter(from_source(src, batch_size=3) >> op))
    assert jax.dtypes.issubdtype(keys[0].dtype, jax.dtypes.prng_key)
    assert len(set(np.asarray(out["u"]).tolist())) == 3


def test_fingerprint_follows_the_code():
    a = ElementOperator(ElementOperatorConfig(), fn=add_one)
    b = ElementOperator(ElementOperatorConfig(), fn=lambda e, k: e.update_data({"x": e.data["x"] + 2}))
    assert a.fingerprint() == ElementOperator(ElementOperatorConfig(), fn=add_one).fingerprint()
    assert a.fingerprint() != b.fingerprint()


def test_rngs_without_the_stream_or_a_default():
    with pytest.raises(ValueError, match=r"`rngs` has no stream named 'augment' and no default stream"):
        ElementOperator(STOCHASTIC, fn=add_one, rngs=nnx.Rngs(params=0))
