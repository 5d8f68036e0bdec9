"""`tuneops run FILE`: run a FineTuneJob end to end on this machine (the embedded default)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help="run a FineTuneJob locally: data -> train -> evaluate -> export -> register")
    p.add_argument("file", metavar="FILE", help="FineTuneJob YAML (e.g. examples/smollm2-lora.yaml)")
    p.add_argument("--home", help="TUNEOPS_HOME (default $TUNEOPS_HOME or ./.tuneops)")
    p.add_argument("--max-steps", type=int, help="stop training after N optimizer steps (quick try-outs)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import logging
    import sys
    from pathlib import Path

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from tuneops.runtime.pipeline import run_pipeline

    try:
        result = run_pipeline(Path(args.file), home=args.home, max_steps=args.max_steps)
    except ValueError as exc:  # invalid spec or data: the message names the field / file and line
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 2
    summary = {k: v for k, v in result.summary.items() if k in ("datasetHash", "mlflowRunId", "adapterUri",
                                                                 "mergedUri", "modelVersion", "message")}
    evaluation = result.summary.get("evaluation") or {}
    if evaluation:
        summary["verdict"] = evaluation.get("verdict")
    print(json.dumps({"runDir": str(result.run_dir), "steps": result.steps_done, **summary}, indent=2))
    if not result.ok:
        print(f"stopped: {result.summary.get('message', 'see ' + str(result.run_dir / 'result.json'))}", file=sys.stderr)
    return 0 if result.ok else 1
