"""One materialized shard set of the reference chain, with its transform exported next to it
(``materialize(..., export_transform=True)``), shared by the serving tests."""

from __future__ import annotations

import os

import numpy as np
import pytest

from datarax_beam.runners import materialize, options
from datarax_beam.serving import load_transform
from datarax_beam.sources import ArrayRecordSourceModule

from .chains import N, pipeline, raw_records


@pytest.fixture(scope="session")
def materialized(tmp_path_factory):
    """(shard-set directory, its transform, the records read back from the shards)."""
    out = str(tmp_path_factory.mktemp("serving") / "train")
    materialize(pipeline(), out, num_shards=2, options=options.in_process(), export_transform=True)
    transform = load_transform(os.path.join(out, "transform"))
    reader = ArrayRecordSourceModule(out)
    return out, transform, dict(reader.get_batch(np.arange(N)))


@pytest.fixture(scope="session")
def raw():
    return raw_records()
