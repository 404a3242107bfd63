"""What the kernel raises and warns: each message names the operator, the feature and the record."""

from __future__ import annotations


class PerRecordPathWarning(UserWarning):
    """An operator of a JAX segment runs per record, eagerly (slow); issued once per kernel and
    operator. The message names the operator, the feature and the reason."""


class NarrowingError(ValueError):
    """A 64-bit value a JAX segment reads does not survive JAX's 32-bit types (x64 off)."""


class OperatorError(RuntimeError):
    """Online: an operator failed on a record; names its global index, the operator and the
    original error (chained as ``__cause__``).

    Attributes:
      index: the record's global index.
      operator: the operator's name.
    """

    def __init__(self, message: str, index: int, operator: str):
        super().__init__(message)
        self.index, self.operator = index, operator


_TRACE_MARK = "_datarax_beam_trace_error"


def mark_trace_error(exc: BaseException, operator: str) -> None:
    """Marks ``exc`` as raised while tracing ``operator``: a bug of the chain, not of a record."""
    setattr(exc, _TRACE_MARK, operator)
    if hasattr(exc, "add_note"):
        exc.add_note(f"(raised while JAX traced operator {operator!r}: the chain fails for every "
                     f"record of this signature, not because of one record)")


def trace_error_operator(exc: BaseException) -> str | None:
    """The operator whose tracing raised ``exc``, or None when ``exc`` is not a trace error."""
    return getattr(exc, _TRACE_MARK, None)
