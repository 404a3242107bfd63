"""Every in-memory example of the data-sources guide, as written (``datarax`` -> ``datarax_beam``).

The snippets below are copied verbatim from the guide (docs: "Working with Data Sources") with
only the package name replaced; each is exec'd and then its results are checked.
"""

import numpy as np

from datarax_beam.core.data_source import SourceCursor, get_cursor
from datarax_beam.core.element import Element
from datarax_beam.testing import assert_restores_at_every_step

MEMORY_SOURCE = '''
from datarax_beam import from_source
from datarax_beam.sources import MemorySource, MemorySourceConfig
import jax.numpy as jnp

# Create sample data
data = [{"image": jnp.ones((28, 28)), "label": i % 10} for i in range(100)]

# Create data source with config
config = MemorySourceConfig()
source = MemorySource(config, data)

# Use in a pipeline
pipeline = from_source(source, batch_size=10)

# Iterate through batches
for i, batch in enumerate(pipeline):
    print(f"Batch shape: {batch['image'].shape}")
    if i >= 2:
        break
'''

CSV_SOURCE = '''
import flax.nnx as nnx
import jax.numpy as jnp
from datarax_beam.core.data_source import DataSourceModule
from typing import Iterator
from datarax_beam.typing import Element

class CSVDataSource(DataSourceModule):
    """Data source that reads from a CSV file."""

    def __init__(self, file_path: str, name: str = "csv_source"):
        super().__init__(name=name)
        self.file_path = file_path
        self.data = None  # Will be loaded later
        self.index = 0

    def __iter__(self) -> Iterator[Element]:
        # Load data on first iteration
        if self.data is None:
            import csv
            import numpy as np

            rows = []
            with open(self.file_path, 'r') as f:
                reader = csv.reader(f)
                header = next(reader)  # Skip header
                for row in reader:
                    rows.append([float(x) for x in row])

            self.data = np.array(rows)

        # Reset iterator state
        self.index = 0
        return self

    def __next__(self) -> Element:
        if self.index >= len(self.data):
            raise StopIteration

        # Get current element
        element = {"features": jnp.array(self.data[self.index])}

        # Update state
        self.index += 1

        return element
'''

METHOD_1 = '''
from datarax_beam import from_source
from datarax_beam.sources import MemorySource, MemorySourceConfig
from datarax_beam.operators import ElementOperator, ElementOperatorConfig
from datarax_beam.dag.nodes import OperatorNode

# Create data and source
data = [{"x": i} for i in range(100)]
config = MemorySourceConfig()
source = MemorySource(config, data)

# Define a simple operator
def identity(element, key):
    return element

op = ElementOperator(ElementOperatorConfig(stochastic=False), fn=identity)

# Build pipeline
pipeline = (
    from_source(source, batch_size=32)
    >> OperatorNode(op)
)
'''

METHOD_2 = '''
from datarax_beam import from_source
from datarax_beam.sources import MemorySource, MemorySourceConfig
from datarax_beam.dag.nodes import OperatorNode
from datarax_beam.operators import ElementOperator, ElementOperatorConfig

# Create data source
data = [{"x": i} for i in range(100)]
config = MemorySourceConfig()
source = MemorySource(config, data)

# Create operator
def double(element, key):
    return element.update_data({"x": element.data["x"] * 2})

op = ElementOperator(ElementOperatorConfig(stochastic=False), fn=double)

# Build pipeline using >> operator
pipeline = (
    from_source(source, batch_size=32)
    >> OperatorNode(op)
)
'''

METADATA_SUPPORT = '''
import jax.numpy as jnp
from datarax_beam.sources import MemorySource, MemorySourceConfig

# Create sample images and labels
images = [jnp.ones((28, 28)) for _ in range(10)]
labels = [i % 10 for i in range(10)]

# Create source with metadata
data = [{"image": image, "label": label} for image, label in zip(images, labels)]
config = MemorySourceConfig()
source = MemorySource(config, data)

# Metadata is automatically tracked per element
for element in source:
    # Element has associated metadata (index, source info, etc.)
    pass
'''

STATE_MANAGEMENT = '''
from datarax_beam.sources import MemorySource, MemorySourceConfig

# Create source
data = [{"x": i} for i in range(100)]
config = MemorySourceConfig()
source = MemorySource(config, data)

# Iterate through some elements
iterator = iter(source)
for i in range(10):
    element = next(iterator)

# Source maintains iteration state
# Can be used for checkpointing
'''


def run_snippet(source: str, name: str) -> dict:
    namespace: dict = {"__name__": f"guide_{name}"}
    exec(compile(source, f"<guide:{name}>", "exec"), namespace)
    return namespace


def test_memory_source_example(capsys):
    ns = run_snippet(MEMORY_SOURCE, "memory_source")
    assert capsys.readouterr().out.splitlines() == ["Batch shape: (10, 28, 28)"] * 3
    batch = ns["batch"]
    assert batch["label"].shape == (10,)
    np.testing.assert_array_equal(batch["label"], np.arange(20, 30) % 10)
    # The loop broke after 3 batches: the pipeline remembers where it stopped.
    assert ns["pipeline"].get_state() == {"epoch": 0, "position": 30}
    rest = list(ns["pipeline"])
    assert len(rest) == 7 and ns["pipeline"].get_state() == {"epoch": 1, "position": 0}


def test_custom_csv_source_example(csv_path):
    ns = run_snippet(CSV_SOURCE, "csv_source")
    from datarax_beam import from_source

    pipeline = from_source(ns["CSVDataSource"](csv_path), batch_size=4)
    batches = list(pipeline)
    assert [b["features"].shape for b in batches] == [(4, 2), (4, 2), (2, 2)]
    features = np.concatenate([np.asarray(b["features"]) for b in batches])
    np.testing.assert_array_equal(features, [[i, 2 * i] for i in range(10)])
    # A second epoch re-reads the file from the start (``__iter__`` resets).
    again = np.concatenate([np.asarray(b["features"]) for b in pipeline])
    np.testing.assert_array_equal(again, features)
    assert pipeline.get_state() == {"epoch": 2, "position": 0}


def test_custom_csv_source_pipeline_restores_at_every_step(csv_path):
    ns = run_snippet(CSV_SOURCE, "csv_source")
    import flax.nnx as nnx
    import jax

    from datarax_beam import from_source
    from datarax_beam.operators import ElementOperator, ElementOperatorConfig

    def jitter(element, key):
        noise = jax.random.uniform(key, element.data["features"].shape)
        return element.update_data({"features": element.data["features"] + noise})

    def make():
        op = ElementOperator(
            ElementOperatorConfig(stochastic=True, stream_name="augment"),
            fn=jitter,
            rngs=nnx.Rngs(augment=0),
        )
        return (from_source(ns["CSVDataSource"](csv_path), batch_size=4) >> op).shuffle(5, seed=1)

    assert assert_restores_at_every_step(make, epochs=2) == 6
    plain = make()
    assert plain.kernel.compile_count == 0  # nothing run yet: the kernel is built lazily


def test_method_1_example():
    ns = run_snippet(METHOD_1, "method_1")
    batches = list(ns["pipeline"])
    assert [b["x"].shape for b in batches] == [(32,), (32,), (32,), (4,)]
    np.testing.assert_array_equal(np.concatenate(batches_x(batches)), np.arange(100))


def test_method_2_example():
    ns = run_snippet(METHOD_2, "method_2")
    batches = list(ns["pipeline"])
    assert [b["x"].shape for b in batches] == [(32,), (32,), (32,), (4,)]
    np.testing.assert_array_equal(np.concatenate(batches_x(batches)), 2 * np.arange(100))


def test_metadata_support_example():
    ns = run_snippet(METADATA_SUPPORT, "metadata_support")
    element = ns["element"]
    assert isinstance(element, Element)
    assert element.metadata.index == 9 and element.metadata.epoch == 0
    assert element.metadata.source_info["source"] == "MemorySource"
    assert element.data["image"].shape == (28, 28) and int(element.data["label"]) == 9
    # The loop consumed one epoch.
    assert ns["source"].get_state() == {"epoch": 1, "position": 0}


def test_state_management_example():
    ns = run_snippet(STATE_MANAGEMENT, "state_management")
    source = ns["source"]
    assert int(ns["element"].data["x"]) == 9
    state = source.get_state()
    assert state == {"epoch": 0, "position": 10}
    assert all(type(v) is int for v in state.values())
    import flax.nnx as nnx

    cursor = nnx.state(source, SourceCursor)
    assert {k: get_cursor(v) for k, v in cursor.items()} == {"epoch": 0, "position": 10}
    # Checkpoint -> fresh source -> continues at record 10.
    fresh = run_snippet(STATE_MANAGEMENT.split("# Iterate")[0], "state_management_fresh")["source"]
    fresh.set_state(state)
    assert [int(e.data["x"]) for e in fresh] == list(range(10, 100))


def batches_x(batches):
    return [np.asarray(b["x"]) for b in batches]


def test_online_example_script_runs(capsys):
    import pathlib
    import runpy

    script = pathlib.Path(__file__).resolve().parents[1] / "examples" / "online.py"
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert "7 batches per epoch" in out
    assert "resumed 4 remaining batches identically; the chain compiled 1 time(s)" in out
