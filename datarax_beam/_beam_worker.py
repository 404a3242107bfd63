"""A quiet DirectRunner worker process: ``python -m datarax_beam._beam_worker``.

Beam's own worker (``python -m apache_beam.runners.worker.sdk_worker_main``) logs a warning
through the root logger while ``import apache_beam`` runs; with no handler there yet, Python's
``logging.warning`` then adds a stderr handler to the root logger, and that handler prints every
line of the harness's start at INFO ("Logging handler created.", ...) before the pipeline options
set the worker's level. Here the root logger gets its stderr handler first -- at WARNING, with
`datarax_beam.logs.NoiseFilter` -- and the worker re-parsing options the driver already parsed
keeps its complaints to itself; then Beam's worker runs unchanged.

`datarax_beam.runners.quiet.FnApiRunner` starts workers this way unless the job's log level is
INFO or DEBUG (then Beam's own worker runs, and prints everything), usually forked from a
preloaded zygote (`datarax_beam.runners.zygote`).

Before anything starts JAX, a worker takes its share of the machine's cores (`pin_cores`): the
driver lists one core set per worker in ``DATARAX_BEAM_WORKER_CORES`` and worker ``k`` (Beam's
``WORKER_ID`` ends in ``k``) takes set ``k`` modulo their number. XLA sizes its thread pools to
the cores a process may use, so w workers on c cores run w pools of c / w threads, not w of c.
Its bundles end without waiting for Beam's state sampler (`sample_states_often`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys

from datarax_beam import logs

#: The environment variable listing the workers' core sets: ``0,1;2,3`` (sets split by ``;``).
CORES = "DATARAX_BEAM_WORKER_CORES"
#: Most bytes of compiled programs a zygote's workers keep on disk (`use_compile_cache`).
COMPILE_CACHE_BYTES = 256 << 20
#: How often, in ms, the state sampler of a bundle samples in our workers (Beam's: 200).
STATE_SAMPLING_MS = 10


def core_set(environ=os.environ) -> frozenset[int] | None:
    """This worker's cores from ``DATARAX_BEAM_WORKER_CORES`` and ``WORKER_ID`` (see the module
    docstring); None when the variable is unset.

    Raises:
      ValueError: the variable is not a list of core sets (naming it and its value).

    Example:
      >>> sorted(core_set({CORES: "0,1;2,3", "WORKER_ID": "worker_5"}))
      [2, 3]
    """
    spec = environ.get(CORES)
    if not spec:
        return None
    try:
        sets = [frozenset(int(c) for c in part.split(",")) for part in spec.split(";")]
    except ValueError:
        raise ValueError(f"{CORES} must be core sets like '0,1;2,3', got {spec!r}") from None
    match = re.search(r"(\d+)$", environ.get("WORKER_ID", ""))
    return sets[int(match.group(1)) % len(sets) if match else 0]


def pin_cores(environ=os.environ) -> frozenset[int] | None:
    """Confines this process to `core_set` (where the OS can); returns the set or None."""
    cores = core_set(environ)
    if cores is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    return cores


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    handler.addFilter(logs.NoiseFilter())
    logging.getLogger().addHandler(handler)
    # "Discarding unparseable args: [...]": the driver parsed the same flags and said so there.
    logging.getLogger("apache_beam.options.pipeline_options").setLevel(logging.ERROR)


def use_compile_cache(directory: str | None) -> bool:
    """Shares compiled programs with the other workers of this driver's zygote through
    ``directory`` (JAX's persistent compilation cache); returns whether it does.

    Each worker compiles its chain (0.1 s for a normalize, 0.3 s for the benchmarks' 6-blur
    chain on the 2-core machine); a worker of a later job of the same driver now loads it in
    ~20 ms. The directory lives and dies with the zygote. Not used where the user set a JAX cache
    of their own, nor without ``filelock``: JAX then writes entries unlocked, and a worker could
    read another's half-written program.
    """
    import jax

    if (not directory or os.environ.get("JAX_COMPILATION_CACHE_DIR") or jax.config.jax_compilation_cache_dir
            or importlib.util.find_spec("filelock") is None):
        return False
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_compilation_cache_max_size", COMPILE_CACHE_BYTES)  # (also: entries locked)
    return True


def sample_states_often(period_ms: int = STATE_SAMPLING_MS) -> bool:
    """Makes the state sampler that Beam starts for each bundle in this process sample every
    ``period_ms``; returns whether it could (False: this Beam's sampler takes no such default).

    The sampler's thread sleeps between samples, from 2 ms growing to Beam's 200 ms within a
    bundle's first second, and the bundle's end joins it: a bundle that ran over a second ended
    with up to 200 ms (100 on average) in which nothing ran. That was 4% of the in-process
    100k-record job of docs/benchmarks.md. Beam offers no option for it: the period is the
    constructor's default. The thread samples without the GIL, so sampling more often costs
    next to nothing. Used by our DirectRunner's in-process runs and its workers.

    Example:
      >>> sample_states_often()
      True
      >>> from apache_beam.runners.worker.statesampler import StateSampler
      >>> from apache_beam.utils.counters import CounterFactory
      >>> StateSampler("stage", CounterFactory()).sampling_period_ms
      10
    """
    import inspect

    from apache_beam.runners.worker import statesampler

    init = statesampler.StateSampler.__init__
    param = inspect.signature(init).parameters.get("sampling_period_ms")
    if param is None or param.default is param.empty or len(init.__defaults__ or ()) != 1:
        return False
    init.__defaults__ = (int(period_ms),)
    return True


def main(argv: list[str], compile_cache: str | None = None) -> None:
    if not logging.getLogger().handlers:  # (a worker forked from the zygote has them already)
        setup_logging()
    pin_cores()
    use_compile_cache(compile_cache)
    from datarax_beam.shards.compress import SWITCH_INTERVAL

    sys.setswitchinterval(SWITCH_INTERVAL)  # (a worker writes shards: see compress.switch_interval)
    sample_states_often()
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(argv)


if __name__ == "__main__":
    main(sys.argv)
