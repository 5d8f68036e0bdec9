"""`tuneops data prepare JOB.yaml [--out DIR]`: run a FineTuneJob's data pipeline on its own.

Relative dataset paths resolve against the YAML file's folder (as in an embedded run). Prints the dataset
version, the counts and the first rejected rows as `file:line: field: reason: message`; exits 1 when the
data cannot be prepared (missing file, too many invalid rows, ...), naming the file, line and field.
"""

import argparse
import sys

SHOW_REJECTS = 5


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="dataset tools (clean, validate, convert, version)")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    p = sub.add_parser("prepare", help="prepare a FineTuneJob's dataset (train/validation/test JSONL + manifest)")
    p.add_argument("file", metavar="FILE", help="FineTuneJob YAML")
    p.add_argument("--out", metavar="DIR", help="output folder (default: $TUNEOPS_HOME/runs/<job>/data)")
    p.add_argument("--job", metavar="NAME", help="which FineTuneJob when FILE holds several")
    p.add_argument("--tokenizer", default="auto", metavar="auto|none|DIR",
                   help="tokenizer for token-length checks: auto = the job's base model (default), none = skip, "
                        "or a local tokenizer folder")
    p.add_argument("--force", action="store_true", help="prepare again even if the output is up to date")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when stderr is a terminal)")
    p.set_defaults(func=cmd_prepare)


def _load_job(path: str, name: str | None):
    import yaml

    from tuneops.manifests import load_finetunejob

    try:
        return load_finetunejob(path, name)
    except (OSError, yaml.YAMLError) as exc:
        raise SystemExit(f"{path}: cannot read: {exc}") from None
    except ValueError as exc:
        hint = " (pick one with --job NAME)" if "FineTuneJobs" in str(exc) else ""
        raise SystemExit(f"{exc}{hint}") from None


def _tokenizer(choice: str, job):
    if choice == "none":
        return None
    if choice == "auto":
        from tuneops.runtime.models import load_tokenizer

        return load_tokenizer(job.spec.base_model)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(choice)


def cmd_prepare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tuneops.runtime.data import DataError, prepare_dataset
    from tuneops.runtime.paths import run_dir

    job = _load_job(args.file, args.job)
    out = Path(args.out) if args.out else run_dir(job.metadata.name) / "data"
    tokenizer = _tokenizer(args.tokenizer, job)
    try:
        prepared = prepare_dataset(job.spec.dataset, out_dir=out, base_dir=Path(args.file).resolve().parent,
                                   tokenizer=tokenizer, max_seq_length=job.spec.training.max_seq_length,
                                   progress=args.progress, reuse=not args.force)
    except DataError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        _print_rejects(out / "rejects.jsonl")
        return 1
    m = prepared.manifest
    c = m["counts"]
    state = "up to date" if prepared.reused else "prepared"
    print(f"{prepared.out_dir}: {state} {prepared.version}")
    print(f"  read {c['read']}  kept {c['kept']}  rejected {c['rejected']} (invalid {c['invalid']}, "
          f"filtered {c['filtered']})  ->  train {c['train']}  validation {c['validation']}  test {c['test']}")
    if m["rejectedByReason"]:
        print("  rejected by reason: " + ", ".join(f"{r} {n}" for r, n in m["rejectedByReason"].items()))
        _print_rejects(prepared.rejects_path)
    return 0


def _print_rejects(path) -> None:
    import json

    try:
        fh = path.open(encoding="utf-8")
    except OSError:
        return
    with fh:
        for i, line in enumerate(fh):
            if i == SHOW_REJECTS:
                print(f"  ... see {path}", file=sys.stderr)
                break
            r = json.loads(line)
            where = f"{r['source']}:{r['line']}" + (f": {r['field']}" if r.get("field") else "")
            print(f"  {where}: {r['reason']}: {r['message']}", file=sys.stderr)
