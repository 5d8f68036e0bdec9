"""Data pipeline throughput and memory: tuneops' streaming `prepare_dataset` vs a plain `datasets.map`
pipeline doing the same work (convert + clean + validate + exact dedupe + write JSONL), on the same
synthetic file, each in its own process so peak RSS is that run's alone.

    python bench/data_bench.py                 # 1,000,000 rows (and a 250,000-row run to show memory is flat)
    python bench/data_bench.py --rows 100000 --sizes 100000   # quick

Prints a table (rows/s, seconds, peak RSS, ratio vs the baseline) and, with --results FILE, appends it
as markdown. The synthetic rows are chat samples with realistic mess: non-NFC Unicode, control
characters, runs of spaces, ~5% duplicates (some differing only in case/spacing), ~1% invalid rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SYSTEM = "You are a helpful support assistant. Answer briefly."
TOPICS = ["invoice", "refund", "password", "2FA code", "webhook", "rate limit", "iOS app", "timeout", "export",
          "Café menu", "naïve déjà vu", "Zürich office", "日本語 support", "emoji 🎉 test"]
VERBS = ["fails", "is broken", "keeps timing out", "shows an error", "looks wrong", "needs a change"]


def make_rows(n: int, seed: int = 0):
    rng = random.Random(seed)
    recent: list[dict] = []
    for i in range(n):
        r = rng.random()
        if r < 0.01:  # invalid: wrong role order / missing messages / bad role
            yield rng.choice([{"messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "x"}]},
                              {"conversation": "nope"},
                              {"messages": [{"role": "robot", "content": "beep"}]}])
            continue
        if r < 0.06 and recent:  # duplicate, sometimes only after normalisation
            row = json.loads(json.dumps(rng.choice(recent)))
            if rng.random() < 0.5:
                row["messages"][1]["content"] = row["messages"][1]["content"].upper().replace(" ", "  ")
            yield row
            continue
        topic = rng.choice(TOPICS)
        user = f"Ticket {i}: my {topic} {rng.choice(VERBS)} since {rng.randint(1, 28)} days, order #{rng.randint(1000, 999999)}."
        if rng.random() < 0.2:
            user = "  " + user.replace(" ", "   ", 2) + "\x07 \r\n\r\n\r\nThanks!  "
        if rng.random() < 0.1:
            user = user.replace("é", "e\u0301")  # decomposed: NFC has work to do
        answer = f"Sorry about the {topic}. I have opened case {i} and we will follow up within {rng.randint(1, 48)} hours."
        row = {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user},
                            {"role": "assistant", "content": answer}]}
        if len(recent) < 1000:
            recent.append(row)
        elif rng.random() < 0.01:
            recent[rng.randrange(1000)] = row
        yield row


def write_input(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in make_rows(n):
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


# --- the two contenders (each runs in a fresh process) -------------------------------------------------
def run_tuneops(src: Path, out: Path) -> dict:
    from tuneops.api.dataset import DatasetSpec
    from tuneops.runtime.data import prepare_dataset

    spec = DatasetSpec.model_validate({"source": str(src), "format": "openai-messages",
                                       "cleaning": {"dedupe": "exact"}, "validation": {"maxRejectedFraction": 0.05},
                                       "split": {"validation": 0.05}})
    prepared = prepare_dataset(spec, out_dir=out, progress=False, reuse=False)
    return prepared.manifest["counts"]


def run_datasets_map(src: Path, out: Path) -> dict:
    """The plain way: load_dataset("json") + map(clean/convert/validate) + filter(dedupe) + to_json, using
    the same conversion, cleaning and validation functions so only the pipeline shape differs."""
    import datasets

    from tuneops.api.dataset import CleaningSpec
    from tuneops.runtime.data.checks import check_chars, check_turns
    from tuneops.runtime.data.cleaning import build_cleaner, dedupe_text
    from tuneops.runtime.data.dedupe import row_hash
    from tuneops.runtime.data.errors import RowError
    from tuneops.runtime.data.formats import Converter

    datasets.disable_progress_bars()
    convert = Converter("openai-messages", {})
    clean = build_cleaner(CleaningSpec())
    # Rows are read as raw text: a schema-less JSON load of mixed rows is what the typed Arrow reader
    # would otherwise reject outright (it cannot hold the invalid rows).
    ds = datasets.load_dataset("text", data_files=str(src), split="train", cache_dir=str(out / "cache"))

    def process(example: dict) -> dict:
        try:
            messages = convert(json.loads(example["text"]))
            for m in messages:
                m["content"] = clean(m["content"])
            check_turns(messages, convert.field_of, require_assistant=True)
            check_chars(sum(len(m["content"]) for m in messages), 1, None)
            return {"messages": json.dumps(messages), "key": row_hash(dedupe_text(messages)) >> 1, "reason": ""}
        except RowError as err:
            return {"messages": "", "key": 0, "reason": err.reason}

    ds = ds.map(process, remove_columns=["text"])
    seen: set[int] = set()

    def first_seen(example: dict) -> bool:
        if example["reason"] or example["key"] in seen:
            return False
        seen.add(example["key"])
        return True

    kept = ds.filter(first_seen)
    kept = kept.map(lambda e: {"messages": json.loads(e["messages"])}, remove_columns=["key", "reason"])
    kept.to_json(str(out / "train.jsonl"))
    return {"read": len(ds), "kept": len(kept)}


def own_peak_rss_kib() -> int:
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across fork + exec, so this process would report the bench
    # parent's resident size whenever that is larger than its own peak.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def worker(name: str, src: Path, out: Path) -> None:
    fn = {"tuneops": run_tuneops, "datasets.map": run_datasets_map}[name]
    start = time.perf_counter()
    counts = fn(src, out)
    seconds = time.perf_counter() - start
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime  # includes worker processes
    print(json.dumps({"name": name, "seconds": seconds, "cpu_seconds": cpu,
                      "main_cpu_seconds": me.ru_utime + me.ru_stime, "peak_rss_mib": own_peak_rss_kib() / 1024,
                      "worker_peak_rss_mib": kids.ru_maxrss / 1024, "counts": counts}))


def measure(name: str, src: Path, rows: int, work: Path) -> dict:
    out = work / f"out-{name.replace('.', '-')}-{rows}"
    done = subprocess.run([sys.executable, __file__, "--worker", name, "--input", str(src), "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["rows"] = rows
    result["rows_per_s"] = rows / result["seconds"]
    result["rows_per_cpu_s"] = rows / result["cpu_seconds"]
    print(json.dumps(result), file=sys.stderr)
    return result


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores visible, Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows for the side-by-side run")
    ap.add_argument("--sizes", default="250000,1000000", help="tuneops-only sizes, to show memory is flat")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--baseline-only", action="store_true", help="measure only datasets.map (at --rows)")
    ap.add_argument("--results", help="append the markdown table to this file")
    ap.add_argument("--worker"), ap.add_argument("--input"), ap.add_argument("--out")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, Path(args.input), Path(args.out))
        return
    sizes = sorted({int(s) for s in args.sizes.split(",") if s} | {args.rows})
    results = []
    with tempfile.TemporaryDirectory(prefix="data-bench-") as tmp:
        work = Path(tmp)
        for n in ([args.rows] if args.baseline_only else sizes):
            src = work / f"rows-{n}.jsonl"
            t = time.perf_counter()
            write_input(src, n)
            print(f"generated {n} rows ({src.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.0f}s",
                  file=sys.stderr)
            if not args.baseline_only:
                results.append(measure("tuneops", src, n, work))
            if n == args.rows and not args.no_baseline:
                results.append(measure("datasets.map", src, n, work))
            src.unlink()
    base = next((r for r in results if r["name"] == "datasets.map"), None)
    header = ("| pipeline | rows | wall s | rows/s (wall) | CPU s (all procs / main) | rows per CPU-s | peak RSS MiB "
              "(main / workers) | wall speed vs datasets.map | kept |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        ratio = f"{r['rows_per_s'] / base['rows_per_s']:.2f}x" if base and r["rows"] == base["rows"] else "—"
        workers = f" / {r['worker_peak_rss_mib']:.0f}" if r["worker_peak_rss_mib"] > 1 else ""
        lines.append(f"| {r['name']} | {r['rows']:,} | {r['seconds']:.1f} | {r['rows_per_s']:,.0f} | "
                     f"{r['cpu_seconds']:.1f} / {r['main_cpu_seconds']:.1f} | {r['rows_per_cpu_s']:,.0f} | {r['peak_rss_mib']:.0f}{workers} | "
                     f"{ratio} | {r['counts']['kept']:,} |")
    table = "\n".join(lines)
    print(table)
    if args.results:
        cmd = "python bench/data_bench.py " + " ".join(a for a in sys.argv[1:] if not a.startswith("--results"))
        with open(args.results, "a", encoding="utf-8") as fh:
            load = os.getloadavg()[0]
            fh.write(f"\n`{cmd.strip()}` on {machine()}, {time.strftime('%Y-%m-%d %H:%M')} "
                     f"(load average at the end: {load:.1f}):\n\n{table}\n")


if __name__ == "__main__":
    main()
