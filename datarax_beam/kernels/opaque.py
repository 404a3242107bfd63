"""Stand-ins that let non-numeric features ride through a jitted chain untouched.

Inside a jitted JAX segment every feature that is not a stacked numeric column is replaced by a
placeholder: ``str``/``bytes`` columns by a ``str``/``bytes`` subclass, other object columns
(ragged numeric arrays, values mixed with None) by an `OpaqueObject`. An operator may move a
placeholder between keys (``update_data({"text": e.data["sentence"]})``) or drop it, and the
segment stays one ``jit(vmap(...))``; the kernel then copies the real column to wherever the
placeholder ended up. Any other use (``.lower()``, comparison, formatting, hashing, arithmetic,
``.shape``, passing it to JAX or numpy) raises `NeedsRecordPath`, and the kernel runs that operator
on the per-record path instead, where it sees the real value. So a placeholder never changes what
an operator computes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: Methods an opaque value keeps: object machinery only, nothing that reveals or uses the value.
_KEEP = frozenset({
    "__new__", "__init__", "__class__", "__getattribute__", "__setattr__", "__delattr__",
    "__init_subclass__", "__subclasshook__", "__dir__", "__sizeof__", "__doc__", "__dict__",
    "__module__", "__weakref__", "__repr__",
})


class NeedsRecordPath(Exception):
    """An operator used a placeholder's value: that operator must run per record.

    Attributes:
      feature: the feature whose value was used.
      kind: ``"str"``, ``"bytes"`` or ``"object"`` (ragged arrays, None, mixed values).
      use: what the operator did with it (the method or attribute).
    """

    def __init__(self, feature: str, kind: str, use: str):
        super().__init__(f"an operator used the value of {kind} feature {feature!r} ({use})")
        self.feature, self.kind, self.use = feature, kind, use


def _refuse(name: str):
    def method(self, *args, **kwargs):
        info = self.__dict__
        raise info.get("error", NeedsRecordPath)(info.get("key"), info.get("kind"), name)

    method.__name__ = name
    return method


def _getattr(self, name):
    info = self.__dict__
    raise info.get("error", NeedsRecordPath)(info.get("key"), info.get("kind"), name)


def _repr(self):
    return f"<opaque {self.__dict__.get('kind')} feature {self.__dict__.get('key')!r}>"


def _opaque_type(base: type) -> type:
    namespace: dict[str, Any] = {}
    for name in dir(base):
        if name not in _KEEP and callable(getattr(base, name, None)):
            namespace[name] = _refuse(name)
    namespace["__hash__"] = _refuse("__hash__")
    namespace["__getattr__"] = _getattr  # hasattr(x, "__jax_array__"), .shape, ...: refused too
    namespace["__repr__"] = _repr
    return type(f"Opaque{base.__name__.title()}", (base,), namespace)


_OBJECT_METHODS = (
    "__len__", "__iter__", "__getitem__", "__contains__", "__bool__", "__int__", "__float__",
    "__index__", "__complex__", "__format__", "__str__", "__bytes__", "__hash__", "__eq__",
    "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__neg__", "__pos__", "__abs__",
    "__invert__", "__array__", "__round__",
    *(f"__{p}{op}__" for op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul",
                                "and", "or", "xor", "lshift", "rshift", "divmod")
      for p in ("", "r", "i")),
)

OpaqueStr = _opaque_type(str)
OpaqueBytes = _opaque_type(bytes)
OpaqueObject = type("OpaqueObject", (), {
    **{name: _refuse(name) for name in _OBJECT_METHODS},
    "__getattr__": _getattr, "__repr__": _repr,
    "__doc__": "A placeholder for a value of an object column (ragged array, None, mixed).",
})
_TYPES = {"str": OpaqueStr, "bytes": OpaqueBytes, "object": OpaqueObject}


def opaque(kind: str, key: str, error: Callable[[str, str, str], Exception] | None = None):
    """A placeholder for feature ``key`` whose values are all ``kind`` ("str", "bytes", "object").

    ``error(feature, kind, use)`` builds the exception raised on use (`NeedsRecordPath` by default).
    """
    value = _TYPES[kind]()
    value.__dict__.update(key=key, kind=kind)
    if error is not None:
        value.__dict__["error"] = error
    return value


def source_key(value: Any) -> str | None:
    """The feature a placeholder stands for, or None for any other value."""
    if type(value) in (OpaqueStr, OpaqueBytes, OpaqueObject):
        return value.__dict__["key"]
    return None


def text_kind(column: Any) -> str:
    """"str" or "bytes" when every value of an object column is one; "object" otherwise."""
    values = list(column)
    if values and all(type(v) is str for v in values):
        return "str"
    if values and all(type(v) is bytes for v in values):
        return "bytes"
    return "object"
