"""The failure budget: past ``max_failed_fraction`` the job fails before ``shardset.json`` is
written, naming the counts; an operator that always raises never commits an empty set."""

from __future__ import annotations

import os

import numpy as np
import pytest

from datarax_beam import OperatorNode, from_source
from datarax_beam.operators import ElementOperator, ElementOperatorConfig
from datarax_beam.runners import materialize
from datarax_beam.runners.probe import SchemaProbeFailed
from datarax_beam.shards import load_shardset
from datarax_beam.testing import IteratorSource
from datarax_beam.transforms import FailureBudgetExceeded

from .helpers import Fault, N, errors, pipeline, shard_bytes, source


def _always(e, k):
    raise ValueError("this operator always raises")


def _always_raising(src):
    return from_source(src, 32) >> OperatorNode(ElementOperator(ElementOperatorConfig(), fn=_always))


def test_an_operator_that_raises_while_traced_fails_the_job_at_once(tmp_path):
    # raising whatever the data is a bug of the chain, not of a record: no dead letters, the
    # driver's schema probe fails on the first batch, naming the operator
    out = str(tmp_path / "out")
    with pytest.raises(ValueError, match=r"this operator always raises") as info:
        materialize(_always_raising(source()), out, max_failed_fraction=1.0)
    assert "while JAX traced operator" in "\n".join(getattr(info.value, "__notes__", []))
    assert not os.path.exists(out)  # the driver saw it on the first batch: nothing was written


def test_every_record_failing_fails_the_job(tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(SchemaProbeFailed, match=r"(?s)All 256 records of the first 8 batches failed \(of 2000 "
                                                r"records\).*bad record 0"):
        materialize(pipeline(Fault(tmp_path / "f", range(2000)), src=source(2000)), out)
    assert not os.path.exists(out)


@pytest.mark.parametrize("iterator", [False, True], ids=["random_access", "iterator"])
def test_failures_past_the_budget_fail_before_the_commit(tmp_path, iterator):
    out = str(tmp_path / "out")
    src = source() if not iterator else IteratorSource(source().columns, name="rows")
    old = materialize(pipeline(src=source(150)), out, num_shards=2)  # a committed set to keep
    old_bytes = shard_bytes(out)
    half = Fault(tmp_path / "f", range(N // 2, N))  # the first batches are fine, half of all fail
    with pytest.raises(Exception, match=r"(?s)100 of 200 records failed \(50.0%\), more than "
                                        r"max_failed_fraction=0.1 allows.*Record 100 .*bad record 100"):
        materialize(pipeline(half, src=src), out, num_shards=2, overwrite=True)
    assert load_shardset(out) == old and shard_bytes(out) == old_bytes
    assert sorted(os.listdir(out)) == sorted(["shardset.json"] + [s.name for s in old.shards])
    within = materialize(pipeline(half, src=src), out, num_shards=2, overwrite=True, max_failed_fraction=0.5)
    assert within.num_failed == 100 and within.num_records == 100 and len(errors(out)) == 100


def test_a_budget_of_one_commits_even_an_all_failed_set(tmp_path):
    shardset = materialize(pipeline(Fault(tmp_path / "f", range(N))), str(tmp_path / "out"), max_failed_fraction=1.0)
    assert shardset.num_records == 0 and shardset.num_failed == N and len(errors(shardset.path)) == N
    assert load_shardset(shardset.path) == shardset


def test_zero_budget_fails_on_any_failure(tmp_path):
    with pytest.raises(FailureBudgetExceeded, match=r"1 of 200 records failed \(0.5%\), more than max_failed_fraction=0.0"):
        materialize(pipeline(Fault(tmp_path / "f", [150])), str(tmp_path / "out"), max_failed_fraction=0)


@pytest.mark.parametrize("value", [-0.1, 1.5, True, "0.1", np.nan])
def test_bad_budget(tmp_path, value):
    with pytest.raises(ValueError, match=r"`max_failed_fraction` must be a number in \[0, 1\], got "):
        materialize(pipeline(), str(tmp_path / "out"), max_failed_fraction=value)
    assert not os.path.exists(tmp_path / "out")
