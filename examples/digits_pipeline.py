"""A pipeline file for the CLI: the demo's digits pipeline, ready to materialize.

    datarax-beam materialize examples/digits_pipeline.py:pipeline --output out/digits --num-shards 4
    datarax-beam inspect out/digits --plot out/digits.png
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from demo import build_pipeline, load_digits  # noqa: E402

train, _ = load_digits(subset=None)
pipeline = build_pipeline(train)
