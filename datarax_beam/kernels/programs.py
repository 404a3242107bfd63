"""Compiled programs shared within a process: XLA compiles one lowered program once.

A job traces its chain more than once at the same batch signature: the schema probe runs the
first batch in the driver, then the in-process DoFn builds its own kernel (and a notebook's next
`materialize` of the same pipeline does it again). Each trace lowers to the same program text,
so `compile_lowered` compiles it the first time and hands back the same executable after
(a compile is ~0.1 s on the CPU for a small chain; lowering is kept: it is what says whether the
program is the same).

The key is the program's text (its constants included; kept as its SHA-256), its argument and
result trees, the types of all its arguments (the text leaves out unused ones), the backend and
the default device: two lowerings with the same key are the same program. Programs with custom
calls (a host callback's text names a Python object, which may have been replaced by another at
the same address) or with constants hoisted out of the text are never shared.
`ChainKernel.compile_count` counts the programs a kernel planned, shared or not.

Example:
  >>> import jax, numpy as np
  >>> spec = jax.ShapeDtypeStruct((4,), np.float32)
  >>> a = compile_lowered(jax.jit(lambda x: x * 2).trace(spec).lower())
  >>> b = compile_lowered(jax.jit(lambda y: y * 2).trace(spec).lower())
  >>> a is b, a(np.ones(4, np.float32)).tolist()
  (True, [2.0, 2.0, 2.0, 2.0])
"""

from __future__ import annotations

import collections
import hashlib
import threading
from typing import Any

import jax

#: Most compiled programs kept (least recently used first out).
MAX_PROGRAMS = 64

_programs: collections.OrderedDict[tuple, Any] = collections.OrderedDict()
_lock = threading.Lock()


def compile_lowered(lowered: Any) -> Any:
    """``lowered.compile()``, or the executable an identical program already compiled to."""
    text = lowered.as_text()
    # constants JAX hoists out of the program ride with the executable, not in the text (and a
    # JAX that does not say whether it did is not trusted)
    consts = getattr(getattr(lowered, "_lowering", None), "const_args", None)
    if consts is None or len(consts) or "custom_call" in text:
        return lowered.compile()
    # (the text omits arguments the program does not use: their types are part of the key too)
    key = (hashlib.sha256(text.encode()).digest(), str(lowered.in_tree), str(lowered.in_avals), str(lowered.donate_argnums),
           str(lowered.out_tree), jax.default_backend(), str(jax.config.jax_default_device))
    with _lock:
        compiled = _programs.get(key)
        if compiled is not None:
            _programs.move_to_end(key)
            return compiled
    compiled = lowered.compile()
    with _lock:
        _programs[key] = compiled
        while len(_programs) > MAX_PROGRAMS:
            _programs.popitem(last=False)
    return compiled


def clear() -> None:
    """Forgets every compiled program (tests; the next compile of each is a real one)."""
    with _lock:
        _programs.clear()
