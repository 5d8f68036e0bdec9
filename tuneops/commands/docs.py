"""`tuneops docs reference [--check]`: (re)generate docs/reference/*.md from the API models and the CLI.

`--check` exits 1 and lists the stale pages (CI runs it next to `tuneops crds --check`).
"""

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("docs", help="documentation tools")
    sub = p.add_subparsers(dest="docs_command", required=True, metavar="SUBCOMMAND")
    r = sub.add_parser("reference", help="generate docs/reference/*.md from the API models and the CLI")
    r.add_argument("--check", action="store_true", help="exit 1 if the committed reference pages are stale")
    r.add_argument("--root", default=".", metavar="DIR", help="repository root (default: the current folder)")
    r.set_defaults(func=cmd_reference)


def cmd_reference(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tuneops.docs_reference import REFERENCE_DIR, stale_reference, write_reference

    root = Path(args.root)
    if args.check:
        stale = stale_reference(root)
        if stale:
            print(f"stale reference pages in {root / REFERENCE_DIR}: {', '.join(stale)}; "
                  "run `tuneops docs reference` and commit", file=sys.stderr)
            return 1
        print(f"reference pages in {root / REFERENCE_DIR} are up to date")
        return 0
    for path in write_reference(root):
        print(f"wrote {path}")
    return 0
