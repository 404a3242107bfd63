"""The ``datarax-beam`` command: ``materialize`` a pipeline, ``inspect`` a shard set.

Examples::

    datarax-beam materialize my_pipeline.py:pipeline --output out/ --num-shards 8 \
        --runner DirectRunner --direct_num_workers 2 --direct_running_mode multi_processing
    datarax-beam inspect out/ --plot out.png

``materialize`` shows records done / total, records/s, ETA and failed records on stderr while the
job runs (when stderr is a terminal, or with ``--progress``); Beam's noise is filtered unless
``--verbose``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import os
import sys
import time
import traceback
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
        except Exception as e:
            raise CLIError(f"Target {spec!r}: running {where!r} failed{_where_in(e, where)}: "
                           f"{type(e).__name__}: {e}") from None
        finally:
            sys.path.pop(0)
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as e:
            raise CLIError(f"Target {spec!r}: cannot import module {where!r}: {e}") from None
        except Exception as e:
            raise CLIError(f"Target {spec!r}: importing module {where!r} failed: "
                           f"{type(e).__name__}: {e}") from None
    if not hasattr(module, name):
        found = sorted(k for k, v in vars(module).items() if isinstance(v, Pipeline))
        raise CLIError(f"Target {spec!r}: {where!r} has no {name!r} (pipelines found: {found or 'none'})")
    target = getattr(module, name)
    if callable(target) and not isinstance(target, Pipeline):
        target = target()
    if not isinstance(target, Pipeline):
        raise CLIError(f"Target {spec!r} is a {type(target).__name__}, not a pipeline built with from_source(...)")
    return target


def _where_in(error: BaseException, filename: str) -> str:
    """`` (line N)`` of the deepest frame of ``filename`` in the error's traceback, if any."""
    if isinstance(error, SyntaxError) and error.lineno:
        return f" (line {error.lineno})"
    path = os.path.abspath(filename)
    lines = [f.lineno for f in traceback.extract_tb(error.__traceback__) if os.path.abspath(f.filename) == path]
    return f" (line {lines[-1]})" if lines else ""


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def summary(shardset, counts: dict[str, int], seconds: float) -> str:
    """The lines ``materialize`` prints when the job has committed."""
    n = shardset.num_records
    lines = [
        f"wrote {n:,} records in {len(shardset.shards)} shard{'s' * (len(shardset.shards) != 1)} "
        f"({_mib(shardset.total_bytes)}, "
        f"{shardset.compression}) to {shardset.path}",
        f"  {seconds:.1f} s, {n / max(seconds, 1e-9):,.0f} records/s (whole job: start-up, "
        f"compilation and commit included)",
    ]
    known = ("records_read", "records_transformed", "records_written", "records_failed",
             "kernel_compilations")
    shown = [f"{k} {counts[k]:,}" for k in known if k in counts]
    if shown:
        lines.append("  counters: " + ", ".join(shown))
    if shardset.num_failed:
        lines.append(f"  {shardset.num_failed:,} records failed: see {shardset.path}/errors/ "
                     f"(datarax-beam inspect {shardset.path})")
    return "\n".join(lines)


def _cmd_materialize(args: argparse.Namespace, beam_args: list[str]) -> int:
    from datarax_beam.runners import counters, run

    if ":" not in args.target and any(":" in a and not a.startswith("-") for a in beam_args):
        raise CLIError(f"Target {args.target!r} is not FILE.py:NAME; put the target right after "
                       f"`materialize` and Beam flags after it (or write them as --flag=value)")
    pipeline = load_target(args.target)
    kwargs = dict(num_shards=args.num_shards, shuffle=args.shuffle, seed=args.seed,
                  options=beam_args or None, compression=args.compression, overwrite=args.overwrite)
    if args.on_error:
        if "on_error" not in inspect.signature(run).parameters:
            raise CLIError("--on-error is not supported by this version of datarax_beam.materialize")
        kwargs["on_error"] = args.on_error
    if args.check_finite:
        if "check_finite" not in inspect.signature(run).parameters:
            raise CLIError("--check-finite is not supported by this version of datarax_beam.materialize")
        kwargs["check_finite"] = True
    runner = next((a.split("=", 1)[1] if "=" in a else "" for a in beam_args if a.startswith("--runner")), "")
    if not runner and "--runner" in beam_args[:-1]:
        runner = beam_args[beam_args.index("--runner") + 1]
    if not args.quiet:
        print(f"materialize: {args.target} -> {args.output} on {runner or 'DirectRunner (in-process)'}",
              flush=True)
    kwargs["progress"] = False if args.quiet or args.progress_interval == 0 else args.progress
    kwargs["log_level"] = args.log_level
    start = time.perf_counter()
    try:
        done = run(pipeline, args.output, **kwargs)
    except FileExistsError as e:
        raise CLIError(f"{e} (pass --overwrite to replace it)") from None
    seconds = time.perf_counter() - start
    try:
        counts = counters(done.result)
    except Exception:  # a runner without metrics support still committed the shard set
        counts = {}
    print(summary(done.shardset, counts, seconds))
    return 0


def _cmd_inspect(args: argparse.Namespace, extra: list[str]) -> int:
    from datarax_beam.inspect import describe, format_report

    if extra:
        raise CLIError(f"inspect: unexpected arguments {extra}")
    if "://" not in args.path and not os.path.exists(args.path):
        raise CLIError(f"{args.path!r} does not exist")
    if os.path.isfile(args.path):
        raise CLIError(f"{args.path!r} is a file; inspect takes a shard-set directory "
                       f"(the --output of materialize, holding shardset.json)")
    try:
        info = describe(args.path)
    except (OSError, ValueError) as e:  # not committed, unreadable metadata or shard
        raise CLIError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    if args.json:
        print(json.dumps(info, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v), indent=1))
    else:
        print(format_report(info))
    if args.plot:
        from datarax_beam.plot import plot_shardset

        try:
            panels = plot_shardset(args.path, args.plot)
        except ValueError as e:  # no records to plot
            raise CLIError(str(e)) from None
        # with --json, stdout stays one JSON document
        what = ", ".join(f"{p.feature} ({p.chart.replace('_', ' ')})" for p in panels)
        print(f"plot of {what} written to {args.plot}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _log_level(value: str) -> str:
    from datarax_beam.logs import check_level

    try:
        check_level(value)
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value.upper()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="datarax-beam", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("materialize", allow_abbrev=False, help="run a pipeline on Apache Beam and write ArrayRecord shards",
                       epilog="Any other flag is passed to Beam (e.g. --runner, --direct_num_workers).")
    m.add_argument("target", help="FILE.py:NAME or MODULE:NAME of a pipeline (or a function returning one)")
    m.add_argument("--output", required=True, help="output directory (local path or any Beam filesystem URL)")
    m.add_argument("--num-shards", type=int, default=None)
    m.add_argument("--shuffle", action="store_true", help="globally shuffle records across shards")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--compression", default="zstd")
    m.add_argument("--overwrite", action="store_true", help="replace an existing committed shard set")
    m.add_argument("--on-error", choices=["dead_letter", "raise"], default=None)
    m.add_argument("--check-finite", action="store_true",
                   help="send records with NaN/inf in a float feature to the dead-letter output")
    m.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show records done / total, records/s, ETA and failed records on stderr "
                        "(default: when stderr is a terminal)")
    m.add_argument("--progress-interval", type=float, default=None, help=argparse.SUPPRESS)  # 0: --no-progress
    m.add_argument("--quiet", action="store_true", help="print only the final summary")
    m.add_argument("--verbose", dest="log_level", action="store_const", const="INFO", default=None,
                   help="show Beam's INFO messages and the warnings filtered by default")
    m.add_argument("--log-level", dest="log_level", type=_log_level, metavar="LEVEL",
                   help="Beam's messages shown (DEBUG, INFO, WARNING, ERROR); default WARNING, less known noise")
    m.set_defaults(func=_cmd_materialize)
    i = sub.add_parser("inspect", allow_abbrev=False, help="describe a shard set: schema, counts, sizes, a sample")
    i.add_argument("path")
    i.add_argument("--plot", metavar="PNG", help="write a PNG with a panel per feature: bar charts of "
                   "categories and vocabulary ids, top strings, sample images, histograms")
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.set_defaults(func=_cmd_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "log_level", None):  # before Beam is imported: its import-time noise too
        import logging

        from datarax_beam import logs

        logging.basicConfig()
        logs.set_level(args.log_level)
    try:
        return args.func(args, extra)
    except CLIError as e:
        print(f"datarax-beam: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
