"""`HostOperator`: an operator that runs on the host, over a whole batch of columns.

An operator runs either in JAX (`OperatorModule.apply`, traced per record under
``jax.jit(jax.vmap(...))``, fixed shapes) or on the host: ``fn(batch, keys) -> batch`` over a
dict of columns (numpy arrays, object arrays of bytes/str/ragged arrays, or lists) that may
change shapes and types — decode, resize, tokenize, pad. The kernel cuts a chain into host and
JAX segments (`datarax_beam.kernels`); online and offline cut it the same way.

Keys: ``keys[i]`` is the raw ``uint32`` key data of the very key a JAX operator of the same
stream would get for record ``i`` (``fold_in(fold_in(base, epoch), index)``), so a stochastic
host operator is as reproducible as a JAX one. `host_rng` turns one row into a numpy Generator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.nnx as nnx
import jax
import numpy as np

from datarax_beam.core import columns as cols
from datarax_beam.core.element import Element
from datarax_beam.core.operator import OperatorConfig, OperatorModule, code_fingerprint

HostFn = Callable[[dict[str, Any], "np.ndarray | None"], Mapping[str, Any]]


def host_rng(key_data: np.ndarray) -> np.random.Generator:
    """A numpy Generator seeded by one record's key data (a row of a host operator's ``keys``)."""
    return np.random.default_rng(np.asarray(key_data, dtype=np.uint32).tolist())


class HostOperator(OperatorModule):
    """``fn(batch, keys) -> batch`` on the host, over a batch of columns.

    Args:
      fn: takes a dict of columns (one entry per record in each) and, for a stochastic operator,
        ``keys`` (``uint32`` array ``(n, 2)``, see module doc; ``None`` when deterministic);
        returns a dict of columns with the same number of records. Columns may be numpy arrays,
        object arrays or lists; they may change shape and type. Features ``fn`` does not return
        are dropped, as with `Element.replace_data`: return ``{**batch, ...}`` to keep them.
      config: `OperatorConfig` (``stochastic``/``stream_name``); deterministic by default.
      rngs: the ``nnx.Rngs`` seeding a stochastic operator.
      name: a name for messages and metrics.
      threads: run ``fn`` on up to this many contiguous pieces of a batch at once, in the
        kernel's thread pool (useful when ``fn``'s work releases the GIL: Pillow, tokenizers,
        numpy); ``fn`` must then be thread-safe. ``None``: the kernel's default (the usable
        cores, at most 8); ``1``: one call per batch. Results do not depend on it.
      record_wise: ``fn`` treats records independently (required for ``threads`` > 1 and for
        splitting batches; the default). With False, ``fn`` always gets the whole batch.

    Example:
      >>> import numpy as np
      >>> lower = HostOperator(lambda b, k: {**b, "text": [t.lower() for t in b["text"]]})
      >>> lower.apply_batch({"text": np.array(["A", "Bc"], dtype=object)}, None)["text"].tolist()
      ['a', 'bc']
    """

    on_host = True

    def __init__(
        self,
        fn: HostFn | None = None,
        config: OperatorConfig | None = None,
        rngs: nnx.Rngs | None = None,
        *,
        name: str | None = None,
        threads: int | None = None,
        record_wise: bool = True,
    ):
        if fn is not None and not callable(fn):
            raise TypeError(f"`fn` must be callable as fn(batch, keys), got {fn!r}")
        if fn is None and type(self).transform is HostOperator.transform:
            raise TypeError("HostOperator needs `fn` (or a subclass overriding `transform`)")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"`threads` must be an int >= 1 or None, got {threads!r}")
        if not isinstance(record_wise, bool):
            raise TypeError(f"`record_wise` must be a bool, got {record_wise!r}")
        config = OperatorConfig() if config is None else config
        default = getattr(fn, "__name__", None) if fn is not None else type(self).__name__
        super().__init__(config, rngs=rngs, name=name or default or "HostOperator")
        self.fn = fn
        self.threads = threads
        self.record_wise = record_wise

    # -- what subclasses and users supply ------------------------------------------------------
    def transform(self, batch: dict[str, Any], keys: np.ndarray | None) -> Mapping[str, Any]:
        """The batch function; built-in operators override this instead of passing ``fn``."""
        return self.fn(batch, keys)

    # -- what the kernel calls -----------------------------------------------------------------
    def apply_batch(self, batch: Mapping[str, Any], keys: np.ndarray | None) -> dict[str, Any]:
        """Runs the operator on a batch; returns columns in the library's representation."""
        n = cols.num_rows(batch)
        given = {id(v) for v in batch.values()}
        out = self.transform(dict(batch), keys)
        if not isinstance(out, Mapping):
            raise TypeError(
                f"Host operator {self.name!r} must return a dict of columns, got "
                f"{type(out).__name__}: {out!r:.100}"
            )
        columns = {}
        for k, v in out.items():
            if not isinstance(k, str):
                raise TypeError(f"Host operator {self.name!r} returned a non-str feature name {k!r}")
            column = v if isinstance(v, np.ndarray) and (v.dtype == object or v.ndim >= 1) else None
            if column is not None and id(column) not in given and not cols.is_frozen(column):
                # The caller keeps the batch while ``fn`` runs on the next one (the writer
                # compresses it, JAX reads it asynchronously, a user holds it): an array ``fn``
                # may write to again (a reused output buffer) is copied. Input columns passed
                # through are the caller's own and are not.
                column = column.copy()
            elif column is None:
                if isinstance(v, jax.Array):
                    column = np.asarray(v)
                elif isinstance(v, (list, tuple)):
                    column = cols.stack_values(list(v))
                else:
                    raise TypeError(
                        f"Host operator {self.name!r}: feature {k!r} must be a column (array or "
                        f"list with one value per record), got {type(v).__name__}: {v!r:.80}"
                    )
            if len(column) != n:
                raise ValueError(
                    f"Host operator {self.name!r}: feature {k!r} has {len(column)} values for a "
                    f"batch of {n} records (host operators map records one to one)"
                )
            columns[k] = column
        return columns

    def apply(self, element: Element, key: jax.Array | None) -> Element:
        """The per-record form: a batch of one (used only by the per-record fallback)."""
        batch = {k: cols.object_column([v]) if not _is_numeric(v) else np.asarray(v)[None]
                 for k, v in element.data.items()}
        keys = None if key is None else np.asarray(jax.random.key_data(key), np.uint32)[None]
        out = self.apply_batch(batch, keys)
        return element.replace_data({k: v[0] for k, v in out.items()})

    def _fingerprint_extra(self) -> bytes:
        # ``fn`` and other public attributes count in `OperatorModule.fingerprint`; a subclass's
        # own ``transform`` counts by its code.
        transform = type(self).transform
        return b"" if transform is HostOperator.transform else code_fingerprint(transform)


def _is_numeric(value: Any) -> bool:
    arr = value if isinstance(value, (np.ndarray, np.generic, jax.Array)) else None
    if arr is None:
        return isinstance(value, (bool, int, float, complex))
    return np.dtype(arr.dtype).kind in cols.NUMERIC_KINDS


__all__ = ["HostOperator", "host_rng"]
