"""``make bench``: every benchmark, each in a fresh process, then one table of ratios.

Runs, in order (each step is a new Python process, so imports, JIT caches and peak RSS of one
step never leak into the next):

1. ``offline.py`` -- `materialize` vs a hand loop (a) and a naive Beam job (b);
2. ``reader.py`` -- the NNX shard reader vs ``ArrayRecordDataSource`` (a) and Grain (b), a
   two-set `Mixture` vs one set, and restoring mid-epoch on 1M records;
3. ``hf_compare.py`` -- (c) `materialize` vs Hugging Face ``map(batched=True)`` + ``save_to_disk``;
4. ``images.py`` -- JPEG decode/resize/crop/flip/normalize: `materialize` vs a hand loop and Grain;
5. ``text.py`` -- WordPiece tokenization: `materialize` vs HF ``map(batched=True)`` + ``save_to_disk``;
6. ``tabular.py`` -- 3 vocabularies + 4 normalized numerics with the statistics pass (pandas for reference);
7. ``scaleout.py`` -- `materialize` with 1 and 2 worker processes (parallel efficiency, one core
   per worker; and 1 worker with every core) for an
   I/O-bound and a CPU-bound chain, and a 64x64x3 image job vs its hand loop and the chain alone;
8. ``scaling.py`` once per size (10k, 100k, 1M) -- time per record and peak RSS;
9. ``engines.py`` -- `materialize` on Flink with 2 EXTERNAL workers vs the in-process DirectRunner
   (1M generated records; needs Java, Maven and the engines environment, see docs/offline.md).

and prints one table built from this run only. ``--write`` also writes it to
``benchmarks/results.md`` (or ``--results PATH``); nothing is written otherwise.

    python benchmarks/run_all.py [--quick] [--write] [--results PATH]

``--quick`` runs small sizes (a smoke test: seconds, not minutes; its ratios mean little).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MARK = "@@RESULT "

FULL = {"offline": 100_000, "reader": 100_000, "restore": 1_000_000, "hf": 100_000, "repeats": 3,
        "images": 20_000, "text": 100_000, "tabular": 200_000,
        "scaleout": 200_000, "scaleout_images": 50_000,
        "scaling": (10_000, 100_000, 1_000_000), "engines": 1_000_000}
QUICK = {"offline": 4_096, "reader": 4_096, "restore": 20_000, "hf": 4_096, "repeats": 1,
         "images": 300, "text": 2_048, "tabular": 4_096,
         "scaleout": 1_024, "scaleout_images": 1_024,
         "scaling": (1_000, 2_000, 4_000), "engines": 4_096}


def run_step(module: str, args: list[str]) -> dict:
    """Runs ``module.main(args)`` in a fresh interpreter, echoing its output; returns its result."""
    code = (f"import json, sys; sys.path.insert(0, {HERE!r}); import {module}; "
            f"r = {module}.main({args!r}); print({MARK!r} + json.dumps(r), flush=True)")
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"),
               HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1",
               # Beam worker processes unpickle DoFns that refer to the benchmark's module, and
               # must import datarax_beam from this tree
               PYTHONPATH=os.pathsep.join(p for p in (HERE, os.path.dirname(HERE),
                                                      os.environ.get("PYTHONPATH")) if p))
    print(f"== {module}.py {' '.join(args)}", flush=True)
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=os.path.dirname(HERE),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            result = json.loads(line[len(MARK):])
        elif not line.startswith("WARNING:root:apitools"):  # Beam's import-time GCP notice
            print(line)
    if proc.returncode or result is None:
        raise RuntimeError(f"{module}.py {' '.join(args)} failed with exit status {proc.returncode}")
    return result


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM; {platform.system()} "
            f"{platform.release()}; Python {platform.python_version()}")


def table(r: dict, sizes: tuple[int, ...], quick: bool) -> str:
    off, rd, hf, sc = r["offline"], r["reader"], r["hf"], r["scaling"]
    img, txt, tab, eng, out = r["images"], r["text"], r["tabular"], r["engines"], r["scaleout"]
    size = FULL_OR_QUICK(quick)
    hand, ours = off["(a) hand loop"], off["ours in-process"]
    workers = next(v for k, v in off.items() if k.startswith("ours ") and k.endswith("workers"))
    naive = off.get("(b) naive Beam")
    n_off, n_hf = f"{FULL_OR_QUICK(quick)['offline']:,}", f"{FULL_OR_QUICK(quick)['hf']:,}"

    row = _row
    lines = [
        f"Measured {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} on {machine()}"
        + (" (**--quick sizes: a smoke test, not a measurement**)" if quick else "") + ".",
        "",
        "| comparison (records/s, same run) | ours | baseline | ratio | goal |",
        "|---|---:|---:|---:|---|",
        row(f"offline, {n_off} 28x28 f32: `materialize` in-process vs (a) hand loop", ours, hand, 1.3),
        row("offline: `materialize` in-process vs (b) naive Beam job", ours, naive, 4) if naive else
        "| offline: vs (b) naive Beam job | - | skipped | - | >= 4x |",
        row("offline: `materialize` 2 worker processes vs (a) hand loop", workers, hand, None),
        row("reader: `ArrayRecordSourceModule` vs (a) `ArrayRecordDataSource` + `np.frombuffer`",
            rd["reader"], rd["floor"], 1.2),
        row("reader: `ArrayRecordSourceModule` vs (b) Grain `MapDataset`", rd["reader"], rd["grain"], 4),
        row("reader: two-set `Mixture` (1:1) vs one set of the same records (median of the rounds' ratios)",
            rd["mixture"], rd["reader"], 0.9, rd["mixture_vs_reader"]),
        f"| reader: restore mid-epoch on {rd['restore_records']:,} records, until the first batch | "
        f"{rd['restore_seconds']:.3f} s | - | **{rd['restore_seconds']:.3f} s** | < 1 s"
        f"{' (met)' if rd['restore_seconds'] < 1 else ' (**missed**)'} |",
        row(f"(c) `materialize` vs HF `map(batched=True)` + `save_to_disk`, {n_hf} records",
            hf["ours"], hf["hf"], 4),
        row("(c') `materialize` vs HF `with_format('numpy').map(batched=True)` + `save_to_disk`",
            hf["ours"], hf["hf_numpy"], None),
        row(f"images, {size['images']:,} JPEGs 32-128 px, decode/resize 64/crop 56/flip/normalize: "
            "`materialize` vs (a) hand loop" + ("" if img["identical"] else " (**pixels differ**)"),
            img["ours"], img["hand"], 0.8),
        row("images: `materialize` vs (b) Grain, same steps", img["ours"], img["grain"], 2),
        row(f"text, {size['text']:,} sentences, WordPiece, length 64: `materialize` vs HF "
            "`map(batched=True)` + `save_to_disk`" + ("" if txt["identical"] else " (**ids differ**)"),
            txt["ours"], txt["hf"], 1),
        tabular_row(f"tabular, {size['tabular']:,} rows, 3 vocabularies + 4 normalized, statistics "
                    "included: `materialize` rows/s vs pandas in memory"
                    + ("" if tab["identical"] else " (**ids differ**)"), tab["ours"], tab["pandas"], 50_000),
        *scaleout_rows(out),
        row(f"engines, {eng['records']:,} generated 28x28 f32 + normalize: Flink {eng['flink']} (2 EXTERNAL "
            f"workers) vs DirectRunner in-process, Beam {eng['beam']}", eng["flink_rate"], eng["direct_rate"], None),
        "",
        "| scaling: `materialize` of a generated source | time | us/record | vs smallest | peak RSS | RSS growth during the job |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    first = sc[0]["us_per_record"]
    for s in sc:
        lines.append(f"| {s['records']:,} records | {s['seconds']:.1f} s | {s['us_per_record']:.1f} | "
                     f"{s['us_per_record'] / first:.2f}x | {s['peak_rss_mib']:,.0f} MiB | "
                     f"+{s['peak_rss_mib'] - s['rss_after_warmup_mib']:,.0f} MiB |")
    return "\n".join(lines)


def scaleout_rows(out: dict) -> list[str]:
    """Worker scaling as parallel efficiency (2 workers vs twice 1 worker) and the image job."""
    rows, n, m = [], f"{out['records']:,}", f"{out['image_records']:,}"
    for chain, goal in (("normalize", None), ("normalize + 6 blurs", 0.8)):
        rates = out["scaling"][chain]
        kind = "CPU-bound" if "blurs" in chain else "I/O-bound"
        busy = out.get("cores", {}).get(chain, {})
        cores = (f"; cores busy: in-process {busy['in-process']:.2f}, 1 worker {busy['1']:.2f}, 2 workers "
                 f"{busy['2']:.2f} of {os.cpu_count()}") if busy else ""
        rows.append(_row(f"scale-out, {n} generated 28x28 f32, {chain} ({kind}), XLA 1 thread and 1 core per "
                         f"worker: 2 worker processes vs 2 x 1 (parallel efficiency, best of "
                         f"{out.get('repeats', 1)}{cores})", rates["2"],
                         2 * rates["1"], goal))
        share = rates.get("1 share")
        if share is not None:
            rows.append(_row(f"scale-out, {chain}: 2 workers vs 1 worker with every core (the default share; "
                             f"cores busy {busy.get('1 share', 0):.2f})", rates["2"], share, None))
        rows.append(_row(f"scale-out, {chain}: 2 worker processes vs in-process", rates["2"], rates["in-process"],
                         None))
    img = out["images"]
    rows.append(_row(f"image job, {m} 64x64x3 uint8 -> normalize, keyed flip + brightness, 3x3 blur, f16: "
                     "`materialize` in-process vs hand loop", img["materialize in-process"], img["hand loop"], None))
    rows.append(_row("image job: `materialize` in-process vs the chain alone (no encoding, compression or writing)",
                     img["materialize in-process"], img["chain alone"], None))
    return rows


def _row(what: str, ours_rate: float, other_rate: float, goal: float | None, ratio: float | None = None) -> str:
    """A table row; ``ratio`` defaults to ``ours_rate / other_rate`` (the two best rates)."""
    ratio = ours_rate / other_rate if ratio is None else ratio
    ok = "" if goal is None else (" (met)" if ratio >= goal else " (**missed**)")
    goal_text = "-" if goal is None else f">= {goal:g}x{ok}"
    return f"| {what} | {ours_rate:,.0f} | {other_rate:,.0f} | **{ratio:.2f}x** | {goal_text} |"


def tabular_row(what: str, ours_rate: float, pandas_rate: float, goal: float) -> str:
    """A row whose goal is an absolute rate (pandas is a reference, not a goal)."""
    ok = " (met)" if ours_rate >= goal else " (**missed**)"
    return (f"| {what} | {ours_rate:,.0f} | {pandas_rate:,.0f} | **{ours_rate / pandas_rate:.2f}x** | "
            f">= {goal:,.0f} rows/s{ok} |")


def FULL_OR_QUICK(quick: bool) -> dict:  # noqa: N802
    return QUICK if quick else FULL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--write", action="store_true", help="write the table to --results")
    parser.add_argument("--results", default=os.path.join(HERE, "results.md"))
    args = parser.parse_args(argv)
    size = FULL_OR_QUICK(args.quick)
    reps = str(size["repeats"])
    results = {
        "offline": run_step("offline", ["--records", str(size["offline"]), "--repeats", reps]),
        "reader": run_step("reader", ["--records", str(size["reader"]), "--repeats", reps,
                                      "--restore-records", str(size["restore"])]),
        "hf": run_step("hf_compare", ["--records", str(size["hf"]), "--repeats", reps]),
        "images": run_step("images", ["--records", str(size["images"])]),
        "text": run_step("text", ["--records", str(size["text"])]),
        "tabular": run_step("tabular", ["--records", str(size["tabular"])]),
        "scaleout": run_step("scaleout", ["--records", str(size["scaleout"]), "--workers", "1,2",
                                          "--image-records", str(size["scaleout_images"]),
                                          "--repeats", str(min(2, size["repeats"]))]),
        "scaling": [run_step("scaling", ["--records", str(n)]) for n in size["scaling"]],
        "engines": run_step("engines", ["--records", str(size["engines"])]),
    }
    text = table(results, size["scaling"], args.quick)
    print("\n" + text)
    if args.write:
        with open(args.results, "w", encoding="utf-8") as f:
            f.write("# Benchmark results (`make bench`)\n\n" + text + "\n")
        print(f"\nwritten to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
