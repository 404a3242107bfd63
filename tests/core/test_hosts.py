"""The global-step rule: hosts take slices of each step; the cursor is the same on every host."""

import doctest

import numpy as np
import pytest

from datarax_beam.core import hosts as hosts_module
from datarax_beam.core.hosts import HostShard, host_steps, records_per_epoch


def _parts(n, position, batch, count, equal=False, drop=False):
    return [host_steps(n, position, batch, HostShard(i, count, equal), drop) for i in range(count)]


def test_docstring_example():
    assert doctest.testmod(hosts_module).failed == 0


@pytest.mark.parametrize("n", [0, 1, 5, 17, 24, 100])
@pytest.mark.parametrize("count", [1, 2, 3, 4])
@pytest.mark.parametrize("batch", [1, 2, 5])
def test_hosts_cover_the_rest_of_the_epoch_exactly_once(n, count, batch):
    for position in sorted({0, n // 3, n}):
        parts = _parts(n, position, batch, count)
        taken = [p for s in parts for lo, hi in zip(s.lo, s.hi, strict=True) for p in range(lo, hi)]
        assert sorted(taken) == list(range(position, n))
        # step j of every host taking part ends at the same cursor, the same on all hosts
        for j in range(max(len(s) for s in parts)):
            assert len({int(s.end[j]) for s in parts if j < len(s)}) == 1
        # concatenated step by step in host order, the slices are the global order itself
        flat = [p for j in range(max((len(s) for s in parts), default=0)) for s in parts if j < len(s)
                for p in range(s.lo[j], s.hi[j])]
        assert flat == list(range(position, n))
    for i, whole in enumerate(_parts(n, 0, batch, count)):
        assert records_per_epoch(n, batch, HostShard(i, count)) == int((whole.hi - whole.lo).sum())


def test_full_steps_take_the_ith_slice_of_each_global_batch():
    s = host_steps(20, 0, 2, HostShard(2, 3))
    assert s.lo.tolist() == [4, 10, 16, 19] and s.hi.tolist() == [6, 12, 18, 20]
    assert s.end.tolist() == [6, 12, 18, 20] and s.final


def test_equal_gives_every_host_len_div_count():
    for n in range(30):
        for count in (2, 3, 4):
            sizes = [int((s.hi - s.lo).sum()) for s in _parts(n, 0, 3, count, equal=True)]
            assert sizes == [n // count] * count


def test_drop_skips_the_partial_step_on_every_host():
    parts = _parts(23, 0, 2, 4, drop=True)
    assert [len(s) for s in parts] == [2, 2, 2, 2] and all(s.final for s in parts)
    assert all(np.all(s.hi - s.lo == 2) for s in parts)


def test_a_host_without_a_share_of_the_last_step_ends_its_part_early():
    parts = _parts(13, 0, 3, 4)  # 12 in one full step, then 1 record: host 3 takes it
    assert [len(s) for s in parts] == [1, 1, 1, 2]
    assert [s.final for s in parts] == [False, False, False, True]
    assert parts[3].is_last(1) and not parts[0].is_last(0)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(index=2, count=2), ValueError, r"HostShard `index` 2 must be in \[0, 2\)"),
    (dict(index=0, count=0), ValueError, r"`count` must be >= 1, got 0"),
    (dict(index=0.5, count=2), TypeError, r"`index` must be an int, got 0.5"),
])
def test_bad_host_shard(kwargs, error, message):
    with pytest.raises(error, match=message):
        HostShard(**kwargs)
