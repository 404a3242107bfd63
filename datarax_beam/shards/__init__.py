"""Shard format: the record codec, shard naming and ``shardset.json``. No Beam imports."""

from datarax_beam.shards.codec import (
    CODEC,
    FeatureSpec,
    Schema,
    SchemaError,
    decode_batch,
    decode_record,
    encode_batch,
)
from datarax_beam.shards.shardset import (
    COMPRESSIONS,
    SHARDSET_FILE,
    ShardInfo,
    ShardSet,
    load_shardset,
    shard_name,
    writer_options,
)

__all__ = [
    "CODEC",
    "COMPRESSIONS",
    "SHARDSET_FILE",
    "FeatureSpec",
    "Schema",
    "SchemaError",
    "ShardInfo",
    "ShardSet",
    "decode_batch",
    "decode_record",
    "encode_batch",
    "load_shardset",
    "shard_name",
    "writer_options",
]
