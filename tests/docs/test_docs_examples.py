"""Every ```python block of docs/*.md and README.md runs, in order, as the reader would run it.

Each document runs alone: an empty working directory, offline Hugging Face settings, and nothing
else — a page makes the data it needs in its own blocks (format.md writes ``out_dir``, sources.md
puts TFDS's ``mock_data`` in MNIST's place). No example may fall to the per-record path: no
`PerRecordPathWarning` may be issued. Blocks of one document share one namespace and run
top to bottom, so a block may use what an earlier one defined. After the blocks, `CHECKS` assert what the
prose promises. A block is left out only when the line before its fence is
``<!-- no-test: reason -->`` (configuration snippets that need a cluster); keep that rare.
"""

from __future__ import annotations

import glob
import os
import re
import warnings

os.environ["HF_HUB_OFFLINE"] = "1"  # before `datasets` reads its config: never touch the network
os.environ["HF_DATASETS_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from datarax_beam.kernels.errors import PerRecordPathWarning  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))) + [os.path.join(ROOT, "README.md")]
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
NO_TEST = re.compile(r"<!--\s*no-test:\s*(\S.*?)\s*-->\s*$")
MAX_OPT_OUTS = 3


def python_blocks(path: str) -> list[tuple[int, str, str | None]]:
    """``(first code line, code, no-test reason or None)`` for each python block of ``path``."""
    text = open(path, encoding="utf-8").read()
    blocks = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        reason = NO_TEST.search(before)
        line = text.count("\n", 0, m.start(1)) + 1
        blocks.append((line, m.group(1), reason.group(1) if reason else None))
    return blocks


# -- per-document checks: what the prose promises --------------------------------------------------
def check_reader(ns: dict):
    assert ns["sizes"] == [600, 600] and ns["step"] == 6
    assert np.array_equal(ns["resumed"], np.concatenate(ns["reference"]))  # 4 hosts -> 2, exactly
    assert ns["mix"].counts == (350, 150) and ns["longer"].counts == (1000, 1000)
    assert ns["data"].get_state()["position"] == 5 * 64


def check_format(ns: dict):
    columns, expected = ns["columns"], ns["_expected"]
    np.testing.assert_array_equal(columns["x"], expected["x"])
    assert columns["s"] == list(expected["s"])
    assert [r.tolist() for r in columns["r"]] == [r.tolist() for r in expected["r"]]


def check_sources(ns: dict):
    assert len(ns["test_source"]) == 100 and len(ns["local"]) == 50  # mock MNIST, the local split
    assert ns["batch"]["record"][0] == b"record 0"


def check_serving(ns: dict):
    assert ns["serve"].dropped[0]["name"] == "jitter" and ns["out"]["city_id"].tolist() == [0, 20]
    for k in ("amount", "city_id", "label"):  # the transform reproduces the shards bit for bit
        assert np.asarray(ns["records"][k]).tobytes() == ns["served"][k].tobytes()
    assert ns["message"].startswith("Operator 'lower' (position 2, HostOperator")


CHECKS = {"reader.md": check_reader, "format.md": check_format, "sources.md": check_sources,
          "serving.md": check_serving}


@pytest.fixture
def offline_hf(monkeypatch, tmp_path):
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


@pytest.mark.parametrize("doc", DOCS, ids=[os.path.relpath(d, ROOT) for d in DOCS])
def test_doc_examples_run(doc, tmp_path, monkeypatch, offline_hf):
    name = os.path.basename(doc)
    blocks = [b for b in python_blocks(doc) if b[2] is None]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    ns: dict = {"__name__": f"docs_{name.replace('.', '_')}"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PerRecordPathWarning)
        for line, code, _ in blocks:
            # pad so that tracebacks give the line number in the markdown file
            exec(compile("\n" * (line - 1) + code, doc, "exec"), ns)
    # no example falls to the per-record path (online, or offline on the in-process runner)
    per_record = [str(w.message) for w in caught if issubclass(w.category, PerRecordPathWarning)]
    assert not per_record, per_record
    if name in CHECKS:
        CHECKS[name](ns)


def test_every_doc_is_linked_and_opt_outs_are_rare():
    docs = [os.path.basename(d) for d in DOCS if os.path.dirname(d).endswith("docs")]
    index = open(os.path.join(ROOT, "docs", "index.md"), encoding="utf-8").read()
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    for doc in docs:
        if doc != "index.md":
            assert f"]({doc})" in index, f"docs/index.md does not link {doc}"
        assert f"](docs/{doc})" in readme, f"README.md does not link docs/{doc}"
    for expected in ("offline.md", "reader.md", "format.md", "sources.md", "benchmarks.md"):
        assert expected in docs
    opted_out = [(os.path.basename(d), line, reason) for d in DOCS for line, _, reason in python_blocks(d) if reason]
    assert len(opted_out) <= MAX_OPT_OUTS, opted_out
    assert sum(len(python_blocks(d)) for d in DOCS) >= 20


def test_block_extraction_honours_no_test(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("text\n```python\na = 1\n```\n<!-- no-test: needs a Dataflow project -->\n"
                  "```python\nraise SystemExit\n```\n```bash\nls\n```\n")
    assert python_blocks(str(md)) == [(3, "a = 1\n", None), (7, "raise SystemExit\n", "needs a Dataflow project")]
