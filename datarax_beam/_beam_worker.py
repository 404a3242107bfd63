"""A quiet DirectRunner worker process: ``python -m datarax_beam._beam_worker``.

Beam's own worker (``python -m apache_beam.runners.worker.sdk_worker_main``) logs a warning
through the root logger while ``import apache_beam`` runs; with no handler there yet, Python's
``logging.warning`` then adds a stderr handler to the root logger, and that handler prints every
line of the harness's start at INFO ("Logging handler created.", ...) before the pipeline options
set the worker's level. Here the root logger gets its stderr handler first -- at WARNING, with
`datarax_beam.logs.NoiseFilter` -- and the worker re-parsing options the driver already parsed
keeps its complaints to itself; then Beam's worker runs unchanged.

`datarax_beam.runners.quiet.FnApiRunner` starts workers this way unless the job's log level is
INFO or DEBUG (then Beam's own worker runs, and prints everything).
"""

from __future__ import annotations

import logging
import sys

from datarax_beam import logs


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    handler.addFilter(logs.NoiseFilter())
    logging.getLogger().addHandler(handler)
    # "Discarding unparseable args: [...]": the driver parsed the same flags and said so there.
    logging.getLogger("apache_beam.options.pipeline_options").setLevel(logging.ERROR)


def main(argv: list[str]) -> None:
    setup_logging()
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(argv)


if __name__ == "__main__":
    main(sys.argv)
