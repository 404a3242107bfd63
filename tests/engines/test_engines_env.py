"""`tools/engines_env.py` and ``requirements-engines.txt``: the engines environment has what the
library needs (setup.py's ``install_requires`` but `datasets`), with Beam pinned to the job servers'
release. Plain file checks: no Java, Maven or second environment needed."""

from __future__ import annotations

import ast
import importlib.util
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: not in the engines environment: `datasets` cannot be installed beside Beam 2.62.0 (dill)
LEFT_OUT = {"datasets"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def install_requires() -> dict[str, str]:
    tree = ast.parse(open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    value = next(k.value for k in call.keywords if k.arg == "install_requires")
    return {_name(r): r for r in ast.literal_eval(value)}


def engines_requirements() -> dict[str, str]:
    lines = open(os.path.join(ROOT, "requirements-engines.txt"), encoding="utf-8").read().splitlines()
    reqs = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return {_name(r): r for r in reqs}


def test_the_engines_environment_has_the_library_requirements_but_datasets():
    library, engines = install_requires(), engines_requirements()
    missing = sorted(set(library) - set(engines) - LEFT_OUT)
    assert not missing, f"requirements-engines.txt lacks {missing} (setup.py install_requires)"
    assert not LEFT_OUT & set(engines)
    for name in set(library) - LEFT_OUT - {"apache-beam"}:
        assert engines[name] == library[name], f"{engines[name]!r} != setup.py's {library[name]!r}"


def test_beam_is_pinned_to_one_release_the_library_accepts():
    beam = engines_requirements()["apache-beam"]
    assert re.fullmatch(r"apache-beam==\d+\.\d+\.\d+", beam), beam
    minimum = re.search(r">=([\d.]+)", install_requires()["apache-beam"]).group(1)
    version = beam.split("==")[1]
    assert tuple(map(int, version.split("."))) >= tuple(map(int, minimum.split("."))), (version, minimum)


def _pom_property(runner: str, name: str) -> str:
    text = open(os.path.join(ROOT, "datarax_beam", "runners", "java", f"{runner}.pom.xml"), encoding="utf-8").read()
    return re.search(f"<{re.escape(name)}>([^<]+)</{re.escape(name)}>", text).group(1)


def _engines_env():
    spec = importlib.util.spec_from_file_location("_engines_env", os.path.join(ROOT, "tools", "engines_env.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_poms_default_to_the_engines_beam_so_the_prefetch_fetches_what_the_job_servers_use():
    beam = engines_requirements()["apache-beam"].split("==")[1]
    assert _pom_property("flink", "beam.version") == _pom_property("spark", "beam.version") == beam


@pytest.mark.engines
def test_the_flink_pom_defaults_to_the_newest_flink_line_of_the_engines_beam(engine_versions):
    assert _pom_property("flink", "flink.line") == engine_versions["flink_version"]


def test_prefetch_runs_maven_on_each_pom_and_nothing_without_maven(tmp_path, capsys):
    env = _engines_env()
    assert env.prefetch_jars(str(tmp_path), mvn="no-such-mvn") == []
    mvn = tmp_path / "mvn"
    mvn.write_text('#!/bin/sh\necho "$@"\n[ "$(basename "$3")" = spark.pom.xml ] && exit 3\nexit 0\n')
    mvn.chmod(0o755)
    running = env.prefetch_jars(str(tmp_path / "logs"), mvn=str(mvn))
    assert [os.path.basename(log) for _, log in running] == ["prefetch-flink.log", "prefetch-spark.log"]
    env._wait_prefetch(running)  # a failure is reported, not raised
    assert [p.returncode for p, _ in running] == [0, 3]
    assert f"Maven's prefetch failed (status 3); see {running[1][1]}" in capsys.readouterr().err
    flink_log = open(running[0][1]).read()
    assert flink_log.split() == ["-B", "-f", env.POMS[0], "dependency:resolve"]
