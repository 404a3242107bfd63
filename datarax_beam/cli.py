"""The ``datarax-beam`` command: ``materialize`` a pipeline, ``inspect`` a shard set.

Examples::

    datarax-beam materialize my_pipeline.py:pipeline --output out/ --num-shards 8 \
        --runner DirectRunner --direct_num_workers 2 --direct_running_mode multi_processing
    datarax-beam inspect out/ --plot out.png
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
from typing import Any


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def load_target(spec: str) -> Any:
    """Loads ``FILE.py:NAME`` or ``MODULE:NAME``; a callable NAME is called to build the pipeline."""
    from datarax_beam.dag.pipeline import Pipeline

    if ":" not in spec:
        raise CLIError(f"Target {spec!r} must look like FILE.py:NAME or MODULE:NAME (e.g. my_pipeline.py:pipeline)")
    where, name = spec.rsplit(":", 1)
    if not name.isidentifier():
        raise CLIError(f"Target {spec!r}: {name!r} is not a Python name")
    if where.endswith(".py") or os.sep in where:
        if not os.path.isfile(where):
            raise CLIError(f"Target {spec!r}: file {where!r} does not exist")
        module_spec = importlib.util.spec_from_file_location(f"_datarax_target_{abs(hash(where))}", where)
        module = importlib.util.module_from_spec(module_spec)
        sys.path.insert(0, os.path.dirname(os.path.abspath(where)))
        try:
            module_spec.loader.exec_module(module)
        finally:
            sys.path.pop(0)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise CLIError(f"Target {spec!r}: cannot import module {where!r}: {e}") from None
    if not hasattr(module, name):
        found = sorted(k for k, v in vars(module).items() if isinstance(v, Pipeline))
        raise CLIError(f"Target {spec!r}: {where!r} has no {name!r} (pipelines found: {found or 'none'})")
    target = getattr(module, name)
    if callable(target) and not isinstance(target, Pipeline):
        target = target()
    if not isinstance(target, Pipeline):
        raise CLIError(f"Target {spec!r} is a {type(target).__name__}, not a pipeline built with from_source(...)")
    return target


def _cmd_materialize(args: argparse.Namespace, beam_args: list[str]) -> int:
    import datarax_beam

    pipeline = load_target(args.target)
    kwargs = dict(num_shards=args.num_shards, shuffle=args.shuffle, seed=args.seed,
                  options=beam_args or None, compression=args.compression, overwrite=args.overwrite)
    if args.on_error:
        kwargs["on_error"] = args.on_error
    shardset = datarax_beam.materialize(pipeline, args.output, **kwargs)
    print(f"wrote {shardset.num_records:,} records in {len(shardset.shards)} shards to {shardset.path}")
    return 0


def _cmd_inspect(args: argparse.Namespace, extra: list[str]) -> int:
    from datarax_beam.inspect import describe, format_report

    if extra:
        raise CLIError(f"inspect: unexpected arguments {extra}")
    if not os.path.exists(args.path):
        raise CLIError(f"{args.path!r} does not exist")
    try:
        info = describe(args.path)
    except FileNotFoundError as e:
        raise CLIError(str(e)) from None
    if args.json:
        print(json.dumps(info, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v), indent=1))
    else:
        print(format_report(info))
    if args.plot:
        from datarax_beam.plot import plot_shardset

        plotted = plot_shardset(args.path, args.plot)
        print(f"plot of {', '.join(plotted)} written to {args.plot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="datarax-beam", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("materialize", help="run a pipeline on Apache Beam and write ArrayRecord shards",
                       epilog="Any other flag is passed to Beam (e.g. --runner, --direct_num_workers).")
    m.add_argument("target", help="FILE.py:NAME or MODULE:NAME of a pipeline (or a function returning one)")
    m.add_argument("--output", required=True, help="output directory (local path or any Beam filesystem URL)")
    m.add_argument("--num-shards", type=int, default=None)
    m.add_argument("--shuffle", action="store_true", help="globally shuffle records across shards")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--compression", default="zstd")
    m.add_argument("--overwrite", action="store_true", help="replace an existing committed shard set")
    m.add_argument("--on-error", choices=["dead_letter", "raise"], default=None)
    m.set_defaults(func=_cmd_materialize)
    i = sub.add_parser("inspect", help="describe a shard set: schema, counts, sizes, a sample")
    i.add_argument("path")
    i.add_argument("--plot", metavar="PNG", help="write histograms (and sample images) to this PNG")
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.set_defaults(func=_cmd_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        return args.func(args, extra)
    except CLIError as e:
        print(f"datarax-beam: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
