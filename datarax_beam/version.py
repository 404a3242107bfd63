"""The library version, recorded in every ``shardset.json``."""

__version__ = "0.1.0"
