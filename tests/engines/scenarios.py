"""The jobs the engine tests materialize on the DirectRunner, Flink and Spark.

Imported by ``driver.py`` (the submitting process) and by the SDK workers, which unpickle the
operator functions defined here; so it is plain Python with no test-framework imports.

Each job exercises what a cluster does differently from the in-process DirectRunner:
* ``memory``: a random-access source staged to files, ``shuffle=True``, a `Normalize` whose
  statistics reach the operator DoFn as a side input, and records that fail (dead letters);
* ``iterator``: an iterator-only source (read in order by one worker, then redistributed through a
  GroupByKey), statistics, shuffle and dead letters;
* ``tfds``: a TFDS dataset (ArrayRecord files prepared locally, read by index on the workers).
"""

from __future__ import annotations

import os

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from datarax_beam import OperatorNode, from_source
from datarax_beam.operators import ElementOperator, ElementOperatorConfig
from datarax_beam.operators.statistics import Normalize
from datarax_beam.sources import MemorySource
from datarax_beam.testing import IteratorSource

#: Records that fail inside the jitted chain (dead letters): two in one batch, one near the end.
BAD = (5, 6, 233)
TFDS_NAME = "datarax_engines_tiny"
TFDS_RECORDS = 48


def _check(index):
    if int(index) in BAD:
        raise ValueError(f"bad record {int(index)}")
    return np.float32(0)


def _guard(e, k):
    """Raises (from a host callback inside the jitted chain) for the records in `BAD`."""
    zero = jax.pure_callback(_check, jax.ShapeDtypeStruct((), jnp.float32), e.metadata.index,
                             vmap_method="sequential")
    return e.update_data({"x": e.data["x"] + zero})


def _noise(e, k):
    return e.update_data({"x": e.data["x"] + 0.1 * jax.random.normal(k, e.data["x"].shape)})


def _noise_op(seed):
    return ElementOperator(ElementOperatorConfig(stochastic=True, stream_name="augment"), fn=_noise,
                           rngs=nnx.Rngs(augment=seed))


def memory_job(data_dir: str):
    rng = np.random.default_rng(0)
    n = 600
    source = MemorySource(data={"x": rng.random((n, 6, 6), dtype=np.float32) * 255,
                                "label": np.arange(n, dtype=np.int64) % 10})
    pipeline = (from_source(source, 64) >> OperatorNode(Normalize("x"))
                >> OperatorNode(_noise_op(7)) >> OperatorNode(ElementOperator(ElementOperatorConfig(), fn=_guard)))
    return pipeline, {"num_shards": 3, "shuffle": True, "seed": 11}


def iterator_job(data_dir: str):
    n = 300
    rng = np.random.default_rng(1)
    source = IteratorSource({"x": rng.normal(3.0, 2.0, (n, 4)).astype(np.float32),
                             "id": np.arange(n, dtype=np.int64) * 1000}, name="engine-stream")
    pipeline = (from_source(source, 32) >> OperatorNode(Normalize("x", axes="all"))
                >> OperatorNode(_noise_op(3)) >> OperatorNode(ElementOperator(ElementOperatorConfig(), fn=_guard)))
    # log_level: materialize passes it to the workers, and Flink's and Spark's job servers read it
    # too (as Java's level names; runners.options.harness_log_level)
    return pipeline, {"num_shards": 2, "shuffle": True, "seed": 5, "log_level": "WARNING"}


def _scale(e, k):
    return e.update_data({"image": e.data["image"] * 2})


def _jitter(e, k):
    return e.update_data({"jitter": jax.random.uniform(k, ())})


def prepare_tfds(data_dir: str) -> None:
    """Builds the tiny TFDS dataset in ``data_dir`` (ArrayRecord, 3 files), once."""
    import tensorflow_datasets as tfds

    class DataraxEnginesTiny(tfds.core.GeneratorBasedBuilder):  # registers TFDS_NAME
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(4, 4, 1), dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=3),
                "text": tfds.features.Text(),
            }))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i in range(TFDS_RECORDS):
                yield i, {"image": np.full((4, 4, 1), i, np.uint8), "label": i % 3, "text": f"t{i}"}

    builder = DataraxEnginesTiny(data_dir=data_dir, file_format="array_record")
    if not builder.is_prepared():
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=3))


def tfds_job(data_dir: str):
    from datarax_beam.sources import TFDSEagerConfig, TFDSEagerSource

    tfds_dir = os.path.join(data_dir, "tfds")
    prepare_tfds(tfds_dir)
    source = TFDSEagerSource(TFDSEagerConfig(name=TFDS_NAME, split="train", data_dir=tfds_dir, download=False))
    pipeline = (from_source(source, 16) >> OperatorNode(ElementOperator(ElementOperatorConfig(), fn=_scale))
                >> OperatorNode(ElementOperator(ElementOperatorConfig(stochastic=True, stream_name="jitter"),
                                                fn=_jitter, rngs=nnx.Rngs(jitter=2))))
    return pipeline, {"num_shards": 2, "shuffle": True, "seed": 1}


JOBS = {"memory": memory_job, "iterator": iterator_job, "tfds": tfds_job}
