"""`datarax_beam.logs` and the quiet worker entry: levels, the noise filters, and what a fresh
process prints when it imports Beam."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest

from datarax_beam import logs

APITOOLS = "apitools not found, and bigquery client libraries are not available"


def record(msg, *args, name="apache_beam.x", level=logging.WARNING):
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


@pytest.mark.parametrize("value, expected", [("INFO", 20), ("warning", 30), (" debug ", 10), ("40", 40), (15, 15)])
def test_check_level(value, expected):
    assert logs.check_level(value) == expected


def test_check_level_names_a_bad_value():
    with pytest.raises(ValueError, match=r"Unknown `log_level` 'LOUD'; expected one of \('DEBUG'"):
        logs.check_level("LOUD")
    with pytest.raises(TypeError, match="`log_level` must be one of .* or an int, got True"):
        logs.check_level(True)


def test_noise_is_dropped_while_quiet_and_kept_when_verbose():
    f = logs.NoiseFilter()
    noise = [record(APITOOLS + " despite the import not raising an ImportError."),
             record("No semi_persistent_directory found: %s", "User registered objects ..."),
             record("Discarding unparseable args: %s", ["--pipeline_type_check", "--direct_runner_use_stacked_bundle"])]
    real = [record("Discarding unparseable args: %s", ["--my_typo"]), record("disk full")]
    assert logs.is_quiet() and [f.filter(r) for r in noise + real] == [False] * 3 + [True] * 2
    with logs.level("INFO"):
        assert not logs.is_quiet() and all(f.filter(r) for r in noise + real)
    assert logs.is_quiet()


def test_level_sets_and_restores_the_library_loggers():
    beam = logging.getLogger("apache_beam")
    before = beam.level
    with logs.level("DEBUG"):
        assert logs.get_level() == logging.DEBUG and beam.level == logging.DEBUG
    assert logs.get_level() == logging.WARNING and beam.level == before
    with logs.level(None):
        assert logs.get_level() == logging.WARNING


def test_driver_copies_of_worker_lines_are_dropped_only_inside_the_block():
    logger = logging.getLogger(logs.WORKER_COPIES_LOGGER)
    copy = record("Worker: %s", "severity: WARN message: 'x'", name=logs.WORKER_COPIES_LOGGER)
    assert logger.filter(copy)
    with logs.worker_copies_dropped():
        assert not logger.filter(copy) and logger.filter(record("job done", name=logs.WORKER_COPIES_LOGGER))
        with logs.level("INFO"):
            assert logger.filter(copy)
    assert logger.filter(copy)


def test_the_root_filter_is_installed_once_on_import():
    root = logging.getLogger()
    logs.install()
    assert sum(isinstance(f, logs.NoiseFilter) for f in root.filters) == 1


def _python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=dict(os.environ, JAX_PLATFORMS="cpu", **env), timeout=300)


def test_importing_beam_after_datarax_beam_prints_nothing_unless_verbose():
    code = "import datarax_beam, apache_beam, logging; logging.getLogger('user').warning('mine')"
    quiet = _python(code)
    assert quiet.returncode == 0 and quiet.stderr == "WARNING:user:mine\n"
    verbose = _python(code, DATARAX_BEAM_LOG_LEVEL="INFO")
    assert verbose.returncode == 0 and APITOOLS in verbose.stderr


def test_quiet_worker_logging_prints_warnings_once_and_no_noise():
    out = _python("""
        import logging
        from datarax_beam import _beam_worker
        _beam_worker.setup_logging()
        import apache_beam  # its apitools warning: filtered, and no basicConfig handler
        logging.getLogger("apache_beam.runners.worker.sdk_worker_main").info("Logging handler created.")
        logging.getLogger("apache_beam.options.pipeline_options").warning(
            "Discarding unparseable args: %s", ["--pipeline_type_check"])
        logging.getLogger("user").warning("a real warning")
        print(len(logging.getLogger().handlers))
    """)
    assert out.returncode == 0, out.stderr
    assert out.stderr == "WARNING:user:a real warning\n" and out.stdout == "1\n"


def test_materialize_refuses_a_bad_log_level_before_writing(tmp_path):
    import numpy as np

    from datarax_beam import from_source, materialize
    from datarax_beam.sources import MemorySource

    pipeline = from_source(MemorySource(data={"x": np.arange(4)}), 2)
    with pytest.raises(ValueError, match="Unknown `log_level` 'LOUD'"):
        materialize(pipeline, str(tmp_path / "o"), log_level="LOUD")
    assert not (tmp_path / "o").exists()
