"""The transform format: a manifest is validated whole and every error names the field and the
value; loading refuses an unknown version, a changed or missing file, a corrupt or mismatched
exported function, and a device the transform was not exported for."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from datarax_beam import export_transform, load_transform
from datarax_beam.serving import FORMAT_VERSION, TransformFormatError
from datarax_beam.serving.format import (
    MANIFEST,
    JaxStep,
    describe_column,
    encode_constant,
    parse_manifest,
    plain_json,
    read_manifest,
    step_json,
)

from .chains import pipeline, raw_records


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A transform of the reference chain: steps [jax, host (vocabulary), jax]."""
    path = str(tmp_path_factory.mktemp("format") / "t")
    export_transform(pipeline(data={k: v[:100] for k, v in raw_records().items()}), path)
    return path


@pytest.fixture
def manifest(exported):
    with open(os.path.join(exported, MANIFEST)) as f:
        return json.load(f)


def _set(path: str, value):
    """A mutation setting ``a.b[0].c`` (``None`` value with ``del:`` prefix deletes)."""
    def mutate(m):
        *parents, last = path.removeprefix("del:").replace("]", "").replace("[", ".").split(".")
        d = m
        for p in parents:
            d = d[int(p)] if isinstance(d, list) else d[p]
        if path.startswith("del:"):
            del d[last]
        elif isinstance(d, list):
            d[int(last)] = value
        else:
            d[last] = value
        return m
    return mutate


def _bad_file_name(m):
    files = m["steps"][1]["files"]
    files["../vocabulary.json"] = files.pop("vocabulary.json")
    return m


CASES = [
    (lambda m: [m], r"the manifest is \[\{.*; expected a JSON object"),
    (_set("format", "tfx.transform"), r"field 'format' is 'tfx.transform'; expected 'datarax_beam.transform'"),
    (_set("format_version", 2), rf"field 'format_version' is 2; expected {FORMAT_VERSION}: this version of "
                                rf"datarax_beam reads transform format {FORMAT_VERSION} only"),
    (_set("format_version", True), r"field 'format_version' is True; expected 1"),
    (_set("format_version", "1"), r"field 'format_version' is '1'; expected 1"),
    (_set("del:format_version", None), r"field 'format_version' is missing"),
    (_set("platforms", []), r"field 'platforms' is \[\]; expected a non-empty list"),
    (_set("platforms", "cpu"), r"field 'platforms' is 'cpu'; expected a list"),
    (_set("steps", {}), r"field 'steps' is \{\}; expected a JSON list"),
    (_set("steps[0]", 3), r"field 'steps\[0\]' is 3; expected a JSON object"),
    (_set("steps[0].kind", "python"), r"field 'steps\[0\].kind' is 'python'; expected 'host' or 'jax'"),
    (_set("steps[1].operator", "PickledFunction"), r"field 'steps\[1\].operator' is 'PickledFunction'; expected "
                                                   r"one of \['DecodeImage', 'ResizeImage', 'Tokenize', "),
    (_set("steps[1].config", [1]), r"field 'steps\[1\].config' is \[1\]; expected a JSON object"),
    (_bad_file_name, r"field 'steps\[1\].files.../vocabulary.json' is '../vocabulary.json'; expected a plain "
                     r"file name"),
    (_set("steps[0].file.path", "../../etc/passwd"), r"field 'steps\[0\].file.path' is '../../etc/passwd'; "
                                                     r"expected a relative path inside the transform directory"),
    (_set("steps[0].file.path", "/abs/00.jax"), r"field 'steps\[0\].file.path' is '/abs/00.jax'"),
    (_set("steps[0].file.sha256", "ABC"), r"field 'steps\[0\].file.sha256' is 'ABC'; expected a lowercase hex"),
    (_set("steps[0].file", None), r"field 'steps\[0\].file' is None; expected the exported function's file"),
    (_set("steps[0].inputs[0].dtype", "<U3"), r"field 'steps\[0\].inputs\[0\].dtype' is '<U3'; expected a "
                                              r"numeric numpy dtype"),
    (_set("steps[0].inputs[0].dtype", "float99"), r"field 'steps\[0\].inputs\[0\].dtype' is 'float99'"),
    (_set("steps[0].inputs[0].shape", [-1]), r"field 'steps\[0\].inputs\[0\].shape' is \[-1\]; expected a list "
                                             r"of ints >= 0"),
    (_set("steps[0].outputs[0].kind", "magic"), r"field 'steps\[0\].outputs\[0\].kind' is 'magic'; expected one "
                                                r"of \('computed', 'passed', 'constant'\)"),
    (_set("steps[0].outputs[1].position", 5), r"field 'steps\[0\].outputs\[1\].position' is 5; expected 1 "
                                              r"\(computed outputs in order\)"),
    (_set("steps[0].outputs[2]", {"name": "c", "kind": "constant", "value": {"int": 1}}),
     r"field 'steps\[0\].outputs\[2\].value' is \{'int': 1\}; expected \{'none': true\}"),
    (_set("del:steps[0].outputs[2].from", None), r"field 'steps\[0\].outputs\[2\].from' is missing"),
    (_set("input[0].kind", "tensorish"), r"field 'input\[0\].kind' is 'tensorish'; expected one of \('tensor'"),
    (_set("del:output[0].dtype", None), r"field 'output\[0\].dtype' is missing"),
    (_set("statistics.path", "a/../../b"), r"field 'statistics.path' is 'a/../../b'"),
    (_set("shardset", 3), r"field 'shardset' is 3; expected a JSON object"),
]


@pytest.mark.parametrize(("mutate", "message"), CASES, ids=[m.split(" is ")[0] for _, m in CASES])
def test_every_malformed_field_is_named_with_its_value(manifest, mutate, message):
    parse_manifest(copy.deepcopy(manifest))  # the written manifest is valid
    with pytest.raises(TransformFormatError, match=r"where: " + message):
        parse_manifest(mutate(copy.deepcopy(manifest)), "where")


def test_step_json_is_the_inverse_of_parsing(manifest):
    parsed = parse_manifest(manifest)
    assert [step_json(s) for s in parsed.steps] == manifest["steps"]
    step = JaxStep(("a",), None, (), (("s", "constant", "x"), ("b", "constant", b"\xff"), ("n", "constant", None)))
    again = parse_manifest({**manifest, "steps": [step_json(step)]}).steps[0]
    assert again == step
    assert encode_constant(b"\xff") == {"bytes_latin1": "\xff"}


def test_describe_column_kinds():
    assert describe_column("x", np.zeros((2, 3), np.float16)) == {"name": "x", "kind": "tensor", "dtype": "<f2",
                                                                  "shape": [3]}
    obj = np.empty(2, object)
    obj[:] = [np.zeros(2, np.int16), np.zeros(5, np.int16)]
    assert describe_column("r", obj) == {"name": "r", "kind": "ragged", "dtype": "<i2", "ndim": 1}
    assert describe_column("s", ["a", "b"])["kind"] == "string"
    assert describe_column("b", [b"a"])["kind"] == "bytes"
    assert describe_column("o", ["a", None])["kind"] == "object"


def test_plain_json_refuses_objects():
    assert plain_json({"a": (1, [2.0, None]), "b": True}) == {"a": [1, [2.0, None]], "b": True}
    with pytest.raises(TypeError, match=r"not plain JSON: ndarray array\(\[0"):
        plain_json({"a": np.zeros(2)})
    with pytest.raises(TypeError, match=r"not plain JSON: dict \{1: 2\}"):
        plain_json({1: 2})


# -- a transform directory ----------------------------------------------------------------------
@pytest.fixture
def copied(exported, tmp_path):
    path = str(tmp_path / "t")
    shutil.copytree(exported, path)
    return path


def _rewrite(path: str, mutate) -> None:
    with open(os.path.join(path, MANIFEST)) as f:
        m = json.load(f)
    with open(os.path.join(path, MANIFEST), "w") as f:
        json.dump(mutate(m), f)


def _sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_an_unknown_version_is_refused_on_load(copied):
    _rewrite(copied, _set("format_version", FORMAT_VERSION + 1))
    with pytest.raises(TransformFormatError, match=rf"transform.json: field 'format_version' is {FORMAT_VERSION + 1}"):
        load_transform(copied)


def test_missing_or_unreadable_manifest(copied, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"holds no exported transform \(transform.json is missing\)"):
        load_transform(tmp_path)
    with open(os.path.join(copied, MANIFEST), "w") as f:
        f.write("{not json")
    with pytest.raises(TransformFormatError, match=r"transform.json: not valid JSON"):
        read_manifest(copied)


def test_a_missing_or_changed_file_is_refused(copied):
    jax_file = os.path.join(copied, "steps", "00.jax")
    with open(jax_file, "ab") as f:
        f.write(b"\0")
    with pytest.raises(TransformFormatError, match=r"00.jax: SHA-256 is [0-9a-f]{64}; the manifest records "
                                                   r"[0-9a-f]{64} \(the file changed or is corrupt\)"):
        load_transform(copied)
    os.remove(jax_file)
    with pytest.raises(TransformFormatError, match=r"the manifest names 'steps/00.jax', which is missing"):
        load_transform(copied)


def test_a_corrupt_exported_function_is_refused(copied):
    jax_file = os.path.join(copied, "steps", "00.jax")
    with open(jax_file, "wb") as f:
        f.write(b"not a flatbuffer" * 4)
    _rewrite(copied, _set("steps[0].file.sha256", _sha(jax_file)))
    with pytest.raises(TransformFormatError, match=r"00.jax: not a jax.export serialization that JAX .* reads"):
        load_transform(copied)


def test_an_exported_function_that_does_not_match_its_step_is_refused(copied):
    # step 2's function (one int32 input, one output) where step 0 (two float inputs, two outputs) expects its own
    shutil.copy(os.path.join(copied, "steps", "02.jax"), os.path.join(copied, "steps", "00.jax"))
    _rewrite(copied, _set("steps[0].file.sha256", _sha(os.path.join(copied, "steps", "00.jax"))))
    with pytest.raises(TransformFormatError, match=r"steps\[0\]: the exported function takes .* and returns 1 "
                                                   r"arrays; the manifest's step says inputs \[\('x', '<f4', \[3\]\), "
                                                   r"\('amount', '<f4', \[\]\)\] \(\+ index, epoch\) and 2 computed"):
        load_transform(copied)


def test_a_device_the_transform_was_not_exported_for_is_refused(copied):
    _rewrite(copied, _set("platforms", ["tpu"]))
    with pytest.raises(ValueError, match=r"was exported for platforms \['tpu'\]; device .* is 'cpu'"):
        load_transform(copied)


def test_a_host_operator_that_cannot_be_rebuilt_is_named(copied):
    _rewrite(copied, _set("steps[1].config.top_k", "many"))
    with pytest.raises(TransformFormatError, match=r"steps\[1\]: VocabularyLookup 'vocab_word' cannot be rebuilt "
                                                   r"from its config .*'top_k': 'many'"):
        load_transform(copied)
