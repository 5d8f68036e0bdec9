"""`tuneops report RUN`: the run's base-vs-tuned table and gate verdict in the terminal.

RUN is a job name (a folder under $TUNEOPS_HOME/runs/) or a run folder. `--write` also (re)builds
eval/report.md with the curves and comparison PNGs. Exits 1 when the run has no evaluation yet, 2 when the
eval gate failed (so scripts can act on it).
"""

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="print a run's evaluation table (base vs tuned, eval gate)")
    p.add_argument("run", metavar="RUN", help="job name under $TUNEOPS_HOME/runs, or a run folder")
    p.add_argument("--home", metavar="DIR", help="TUNEOPS_HOME (default: $TUNEOPS_HOME or ./.tuneops)")
    p.add_argument("--write", action="store_true", help="also write eval/report.md and the PNG charts")
    p.add_argument("--markdown", action="store_true", help="print the markdown report instead of the table")
    p.set_defaults(func=cmd_report)


def run_folder(run: str, home: str | None):
    from pathlib import Path

    from tuneops.runtime import paths

    candidate = Path(run)
    if (candidate / "eval").is_dir() or (candidate / "result.json").is_file():
        return candidate
    return paths.run_dir(run, home)


def cmd_report(args: argparse.Namespace) -> int:
    from tuneops.runtime.evaluate import EVALUATION_FILE, read_evaluation
    from tuneops.runtime.report import format_table, markdown, training_summary, write_report

    folder = run_folder(args.run, args.home)
    evaluation_file = folder / "eval" / EVALUATION_FILE
    if not evaluation_file.is_file():
        print(f"{args.run}: no evaluation at {evaluation_file} (has the run finished?)", file=sys.stderr)
        return 1
    try:
        result = read_evaluation(evaluation_file)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.write:
        files = write_report(folder, result)
        print(f"wrote {files.markdown}", file=sys.stderr)
    if args.markdown:
        print(markdown(f"Run {folder.name}", result, summary=training_summary(folder)), end="")
    else:
        print(f"run {folder.name} ({folder})")
        summary = training_summary(folder)
        if summary:
            print("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
        print()
        print(format_table(result))
    return 2 if result.verdict == "Failed" else 0
