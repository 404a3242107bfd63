"""Bad records: the error policy, dead-letter entries and per-record fallbacks.

A step (read, operators, encode) first runs on a whole batch; only when that raises does it run
the batch's records one at a time, so a batch with one bad record still delivers the good ones
and error handling costs nothing while no record fails. A failed record becomes a dead-letter
entry (a small JSON-able dict) that travels with its `Chunk` to the writer, which stores it next
to the shard part it belongs to; the commit step writes the entries of the parts it keeps to
``output_dir/errors/`` (so entries from retried bundles are dropped with their parts).

Entry format (one JSON object per line, see ``docs/reliability.md``)::

  {"index": 17, "position": 17, "stage": "operators", "error_type": "ValueError",
   "message": "...", "source": {"source": "MemorySource", "name": "memory"}}
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from datarax_beam.core import columns as cols
from datarax_beam.shards.codec import MISSING

ON_ERROR = ("dead_letter", "raise")
#: Where a record can fail, in pipeline order (``encode``: it does not fit the shard set's schema).
STAGES = ("read", "operators", "check_finite", "encode")
MAX_MESSAGE = 2000
#: Default of ``materialize(max_failed_fraction=...)``: a job where more than this fraction of
#: the records failed fails instead of committing.
MAX_FAILED_FRACTION = 0.1


class RecordError(RuntimeError):
    """A record failed and the job runs with ``on_error="raise"``; names the index and stage."""


class FailureBudgetExceeded(RuntimeError):
    """More records failed than ``max_failed_fraction`` allows; nothing was committed."""


def check_fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"`max_failed_fraction` must be a number in [0, 1], got {value!r}")
    return float(value)


def check_budget(failed: int, total: int, max_failed_fraction: float, examples=()) -> None:
    """Raises `FailureBudgetExceeded` when ``failed`` of ``total`` records is past the budget,
    with the counts and the first failures (``examples``: dead-letter entries) in the message."""
    if not failed or (total and failed / total <= max_failed_fraction):
        return
    first = "; ".join(describe(e, short=True) for e in list(examples)[:3])
    raise FailureBudgetExceeded(
        f"{failed} of {total} records failed ({100 * failed / max(total, 1):.1f}%), more than "
        f"max_failed_fraction={max_failed_fraction} allows; nothing was committed (no "
        f"shardset.json was written). First failures: {first}"
    )


class ErrorPolicy(NamedTuple):
    """What to do with a bad record (pickled into the DoFns; small).

    Attributes:
      on_error: ``"dead_letter"`` (skip it, record it under ``errors/``) or ``"raise"``.
      check_finite: treat a record with NaN/Inf in a float feature as bad.
      source: the source's `source_info()`, copied into every entry.
    """

    on_error: str = "dead_letter"
    check_finite: bool = False
    source: Mapping[str, Any] | None = None


#: Skip bad records into ``errors/``; no NaN/Inf check.
DEFAULT_POLICY = ErrorPolicy()


def check_on_error(on_error: Any) -> str:
    if on_error not in ON_ERROR:
        raise ValueError(f"Unknown `on_error` {on_error!r}; expected one of {ON_ERROR}")
    return on_error


def _message(exc: BaseException) -> str:
    text = str(exc)
    if len(text) > MAX_MESSAGE:  # XLA callback errors embed a whole traceback: keep both ends
        text = text[: MAX_MESSAGE // 2] + " ... " + text[-MAX_MESSAGE // 2 :]
    return text


def describe(entry: Mapping[str, Any], short: bool = False) -> str:
    """One line about a dead-letter entry (``short``: the message's last 300 characters, where
    wrapped errors such as XLA callback tracebacks keep the real one)."""
    message = entry["message"]
    if short and len(message) > 300:
        message = "..." + message[-300:]
    return (f"Record {entry['index']} (output position {entry['position']}) failed in stage "
            f"{entry['stage']!r}: {entry['error_type']}: {message}")


def failure(policy: ErrorPolicy, index: int, position: int, stage: str, exc: BaseException) -> dict:
    """A dead-letter entry; raises `RecordError` instead when the policy is ``raise``."""
    entry = {"index": int(index), "position": int(position), "stage": stage,
             "error_type": type(exc).__name__, "message": _message(exc),
             "source": dict(policy.source or {})}
    if policy.on_error == "raise":
        raise RecordError(describe(entry)) from exc
    return entry


def dumps(entries) -> bytes:
    return "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries).encode("utf-8")


def loads(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]


def per_record(
    fn: Callable[[dict[str, Any], np.ndarray], dict[str, Any]],
    columns: Mapping[str, Any],
    indices: np.ndarray,
    positions: np.ndarray,
    stage: str,
    policy: ErrorPolicy,
) -> tuple[dict[str, Any], np.ndarray, list[dict]]:
    """Runs ``fn(one_record_columns, its_index)`` on each record; returns (outputs of the good
    records concatenated, boolean mask of good records, dead-letter entries)."""
    n = len(indices)
    good = np.zeros(n, dtype=bool)
    outs, failures = [], []
    for i in range(n):
        try:
            outs.append(fn(cols.take(columns, np.array([i])), indices[i : i + 1]))
            good[i] = True
        except Exception as e:  # noqa: BLE001 - any error of a user's record is data here
            failures.append(failure(policy, indices[i], positions[i], stage, e))
    return concat_records(outs), good, failures


def concat_records(outs) -> dict[str, Any]:
    """Concatenates one-record (or any) batches whose features may differ: a record without a
    feature that others have holds `MISSING` there, so the writer can name what it lacks (and a
    feature only some records have is not dropped)."""
    outs = [o for o in outs if cols.num_rows(o)]
    keys = list(dict.fromkeys(k for o in outs for k in o))
    if all(len(o) == len(keys) for o in outs):
        return cols.concat(outs)
    out = {}
    for k in keys:
        if all(k in o for o in outs):
            out[k] = cols.concat([{k: o[k]} for o in outs])[k]
        else:
            out[k] = cols.object_column([v for o in outs
                                         for v in (list(o[k]) if k in o else [MISSING] * cols.num_rows(o))])
    return out


def not_finite(columns: Mapping[str, Any]) -> dict[int, str]:
    """{row: feature} for rows holding NaN or Inf in a float/complex feature."""
    bad: dict[int, str] = {}
    for name, col in columns.items():
        if isinstance(col, np.ndarray) and col.dtype.kind in "fc":
            rows = ~np.isfinite(col.reshape(len(col), -1)).all(axis=1)
        elif isinstance(col, np.ndarray) and col.dtype == object:
            rows = np.array([isinstance(v, np.ndarray) and v.dtype.kind in "fc" and not np.isfinite(v).all()
                             for v in col], dtype=bool)
        else:
            continue
        for r in np.flatnonzero(rows):
            bad.setdefault(int(r), name)
    return bad


def keep(chunk, good: np.ndarray, failures: list[dict]):
    """A `Chunk`'s bookkeeping for its ``good`` records, with ``failures`` added (columns as is)."""
    return chunk._replace(positions=chunk.positions[good], indices=chunk.indices[good],
                          failures=chunk.failures + tuple(failures))


class NotFiniteError(ValueError):
    """A record holds NaN or Inf (``check_finite=True``)."""
