"""The `tuneops` command line. Each subcommand is a small function; heavy imports happen inside them so
`tuneops validate` stays instant and the operator image needs no ML stack."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

from . import __version__


def cmd_validate(args: argparse.Namespace) -> int:
    import yaml

    from .api import InvalidResource, parse_resource
    from .manifests import load_documents

    failed = checked = 0
    for file in args.files:
        try:
            docs = list(load_documents(file))
        except (OSError, yaml.YAMLError) as exc:
            print(f"{file}: cannot read: {exc}", file=sys.stderr)
            failed += 1
            continue
        for doc in docs:
            checked += 1
            try:
                resource = parse_resource(doc.body)
            except InvalidResource as exc:
                failed += 1
                for err in exc.errors:
                    print(f"{doc.source}: {err}", file=sys.stderr)
                continue
            if not args.quiet:
                print(f"{doc.source}: {resource.kind} {resource.metadata.name} is valid")
    if failed:
        print(f"{failed} invalid of {checked} document(s)", file=sys.stderr)
    return 1 if failed else 0


def cmd_crds(args: argparse.Namespace) -> int:
    from .manifests import CHART_CRD_DIR, CRD_DIR, stale_crds, write_crds

    # By default: the repo's crds/ and, when present, the Helm chart's copy.
    targets = [(Path(args.dir), True)] if args.dir else [(CRD_DIR, True)]
    if not args.dir and CHART_CRD_DIR.is_dir():
        targets.append((CHART_CRD_DIR, False))
    if args.check:
        failed = False
        for directory, strays in targets:
            stale = stale_crds(directory, strays=strays)
            if stale:
                failed = True
                print(f"stale CRDs in {directory}: {', '.join(stale)}; run `tuneops crds` and commit", file=sys.stderr)
            else:
                print(f"CRDs in {directory} are up to date")
        return 1 if failed else 0
    for directory, _ in targets:
        for path in write_crds(directory):
            print(f"wrote {path}")
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    from .api import API_VERSION

    print(f"tuneops {__version__} (API {API_VERSION})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tuneops", description="GitOps fine-tuning and serving of LLMs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="validate tuneops YAML files (every document, every error)")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("crds", help="generate CRD YAML from the API models")
    p.add_argument("--check", action="store_true", help="exit 1 if the committed CRDs are stale")
    p.add_argument("--dir", help="output folder (default: the repo's crds/)")
    p.set_defaults(func=cmd_crds)

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=cmd_version)

    # More command groups live in tuneops/commands/<name>.py, each with `register(subparsers)`. They must
    # import only argparse at module level: heavy imports belong inside the command function.
    from . import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
