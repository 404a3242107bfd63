"""Stand-ins that let text and bytes features ride through a jitted chain untouched.

Inside the jitted kernel each ``str``/``bytes`` feature is replaced by an `opaque` placeholder:
a ``str`` (or ``bytes``) subclass on which every operation raises `NeedsRecordPath`. An operator
may move it between keys (``update_data({"text": e.data["sentence"]})``) or drop it, and the
chain stays one ``jit(vmap(...))``; the kernel then copies the real column to wherever the
placeholder ended up. Any other use (``.lower()``, comparison, formatting, hashing, passing it to
JAX) raises, and the kernel runs that batch signature on the per-record path instead, where the
operator sees the real value. So the placeholder never changes what an operator computes.
"""

from __future__ import annotations

from typing import Any

#: Methods an opaque value keeps: object machinery only, nothing that reveals or uses the value.
_KEEP = frozenset({
    "__new__", "__init__", "__class__", "__getattribute__", "__setattr__", "__delattr__",
    "__init_subclass__", "__subclasshook__", "__dir__", "__sizeof__", "__doc__", "__dict__",
    "__module__", "__weakref__",
})


class NeedsRecordPath(Exception):
    """An operator used a text/bytes feature's value: run the chain per record."""


def _refuse(name: str):
    def method(self, *args, **kwargs):
        raise NeedsRecordPath(f"an operator used feature {self.__dict__.get('key')!r} ({name})")

    method.__name__ = name
    return method


def _opaque_type(base: type) -> type:
    namespace: dict[str, Any] = {}
    for name in dir(base):
        if name not in _KEEP and callable(getattr(base, name, None)):
            namespace[name] = _refuse(name)
    namespace["__hash__"] = _refuse("__hash__")
    return type(f"Opaque{base.__name__.title()}", (base,), namespace)


OpaqueStr = _opaque_type(str)
OpaqueBytes = _opaque_type(bytes)
_TYPES = {"str": OpaqueStr, "bytes": OpaqueBytes}


def opaque(kind: str, key: str):
    """A placeholder for feature ``key`` whose values are all ``kind`` ("str" or "bytes")."""
    value = _TYPES[kind]()
    value.__dict__["key"] = key
    return value


def source_key(value: Any) -> str | None:
    """The feature a placeholder stands for, or None for any other value."""
    if type(value) in (OpaqueStr, OpaqueBytes):
        return value.__dict__["key"]
    return None


def text_kind(column: Any) -> str | None:
    """"str" or "bytes" when every value of an object column is one; None otherwise."""
    values = list(column)
    if values and all(type(v) is str for v in values):
        return "str"
    if values and all(type(v) is bytes for v in values):
        return "bytes"
    return None
