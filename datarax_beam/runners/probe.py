"""Moved to `datarax_beam.transforms.probe` (the `Materialize` transform fixes its schema there)."""

from datarax_beam.transforms.probe import PROBE_BATCHES, SchemaProbeFailed, probe_schema

__all__ = ["PROBE_BATCHES", "SchemaProbeFailed", "probe_schema"]
