"""`tools/engines_env.py` and ``requirements-engines.txt``: the engines environment has what the
library needs (setup.py's ``install_requires`` but `datasets`), with Beam pinned to the job servers'
release. Plain file checks: no Java, Maven or second environment needed."""

from __future__ import annotations

import ast
import os
import re

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
