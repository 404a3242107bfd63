import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from datarax_beam.core.element import Element, RecordMetadata, as_element


def test_update_data_returns_a_new_element_and_keeps_the_old():
    meta = RecordMetadata(index=3, epoch=1)
    e = Element({"x": 1, "y": "a"}, metadata=meta)
    e2 = e.update_data({"x": 2, "z": 3})
    assert e2 is not e
    assert dict(e2.data) == {"x": 2, "y": "a", "z": 3}
    assert dict(e.data) == {"x": 1, "y": "a"}
    assert e2.metadata is meta


def test_replace_data_and_update_state():
    e = Element({"x": 1, "y": 2})
    assert dict(e.replace_data({"z": 0}).data) == {"z": 0}
    e2 = e.update_state({"seen": 1})
    assert dict(e2.state) == {"seen": 1} and dict(e.state) == {}


def test_element_is_immutable():
    e = Element({"x": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.data = {}


def test_record_metadata_fields():
    m = RecordMetadata(index=5, record_key="k5", epoch=2, shard_id=1, source_info={"name": "s"})
    assert (m.index, m.record_key, m.epoch, m.shard_id, m.source_info) == (5, "k5", 2, 1, {"name": "s"})
    assert RecordMetadata().index == 0 and RecordMetadata().record_key is None


def test_element_is_a_pytree_with_metadata_as_aux():
    meta = RecordMetadata(index=7)
    e = Element({"x": jnp.float32(1.0)}, state={"s": jnp.int32(2)}, metadata=meta)
    doubled = jax.tree.map(lambda v: v * 2, e)
    assert isinstance(doubled, Element)
    assert float(doubled.data["x"]) == 2.0 and int(doubled.state["s"]) == 4
    assert doubled.metadata is meta


def test_element_passes_through_vmap():
    def f(e):
        return e.update_data({"x": e.data["x"] + 1})

    out = jax.vmap(f)(Element({"x": jnp.arange(3.0)}))
    np.testing.assert_array_equal(out.data["x"], [1.0, 2.0, 3.0])


def test_bad_data_names_the_argument_and_type():
    with pytest.raises(TypeError, match=r"Element `data` must be a mapping.*got list"):
        Element([1, 2])
    with pytest.raises(TypeError, match=r"update_data expects a mapping.*got int"):
        Element({"x": 1}).update_data(3)


def test_as_element_wraps_dicts_and_fills_missing_metadata():
    meta = RecordMetadata(index=4)
    e = as_element({"x": 1}, meta)
    assert isinstance(e, Element) and e.metadata is meta and dict(e.data) == {"x": 1}
    assert as_element(Element({"x": 1}), meta).metadata is meta
    own = RecordMetadata(index=9)
    assert as_element(Element({"x": 1}, metadata=own), meta).metadata is own
    with pytest.raises(TypeError, match=r"must yield an Element or a dict of features, got tuple"):
        as_element((1, 2))
