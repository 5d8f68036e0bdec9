"""`tuneops versions`: the local model registry ($TUNEOPS_HOME/registry).

    tuneops versions [--model NAME]              list versions (phase, verdict, primary score, lineage)
    tuneops versions show NAME@VERSION           print the ModelVersion YAML (apply it with kubectl)
    tuneops versions promote NAME@VERSION        set the MLflow alias `champion` (refused if the gate failed)
"""

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("versions", help="list, show and promote model versions in the local registry")
    p.add_argument("--home", metavar="DIR", help="TUNEOPS_HOME (default: $TUNEOPS_HOME or ./.tuneops)")
    p.add_argument("--model", metavar="NAME", help="only this registered model")
    p.set_defaults(func=cmd_list)
    sub = p.add_subparsers(dest="versions_command", metavar="SUBCOMMAND")
    show = sub.add_parser("show", help="print a version's ModelVersion YAML")
    show.add_argument("ref", metavar="NAME@VERSION", help="e.g. support-triage@3 or support-triage@latest")
    show.set_defaults(func=cmd_show)
    promote = sub.add_parser("promote", help="point an MLflow alias (default champion) at a version")
    promote.add_argument("ref", metavar="NAME@VERSION")
    promote.add_argument("--alias", default="champion")
    promote.set_defaults(func=cmd_promote)


def cmd_list(args: argparse.Namespace) -> int:
    from tuneops.runtime.registry import RegistryError, list_versions

    try:
        versions = list_versions(args.home, args.model)
    except (RegistryError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 1
    header = ("NAME", "MODEL", "VERSION", "PHASE", "VERDICT", "SCORE", "JOB", "DATASET", "CREATED")
    table = [header]
    for mv in versions:
        ev = mv.status.evaluation if mv.status else None
        score = "-" if ev is None or ev.score is None else f"{ev.primary_metric}={ev.score:.4g}"
        dataset = (mv.spec.lineage.dataset_hash or "-")[:19]
        created = mv.status.created_time.strftime("%Y-%m-%d %H:%M") if mv.status and mv.status.created_time else "-"
        table.append((mv.metadata.name, mv.spec.model, str(mv.spec.version), mv.status.phase if mv.status else "-",
                      ev.verdict if ev else "-", score, mv.spec.lineage.job or "-", dataset, created))
    if len(table) == 1:
        print("no model versions", file=sys.stderr)
        return 0
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0


def _resolve(ref: str, home):
    from tuneops.runtime.registry import read_model_version, resolve_version_dir

    return read_model_version(resolve_version_dir(ref, home))


def cmd_show(args: argparse.Namespace) -> int:
    from tuneops.runtime.registry import RegistryError, to_yaml

    try:
        print(to_yaml(_resolve(args.ref, args.home)), end="")
    except RegistryError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from tuneops.runtime.registry import RegistryError, promote

    try:
        mv = _resolve(args.ref, args.home)
        if mv.status and mv.status.phase == "Rejected":
            raise RegistryError(f"{mv.metadata.name}: rejected by the eval gate; it cannot be promoted")
        if mv.spec.registry is None or not mv.spec.registry.tracking_uri:
            raise RegistryError(f"{mv.metadata.name}: not registered in MLflow")
        promote(mv.spec.registry.name, mv.spec.registry.version, tracking_uri=mv.spec.registry.tracking_uri,
                alias=args.alias)
    except RegistryError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{mv.spec.registry.name}@{args.alias} -> version {mv.spec.registry.version}")
    return 0
