"""`tuneops operator`: run the kopf operator; `tuneops operator rbac`: print its least-privilege ClusterRole."""

from __future__ import annotations

import argparse


def cmd_run(args: argparse.Namespace) -> int:
    from tuneops.operator.runtime import RunOptions, run

    run(RunOptions(namespaces=args.namespace or [], clusterwide=args.all_namespaces, standalone=args.standalone,
                   peering_name=args.peering, priority=args.priority, metrics_port=args.metrics_port,
                   liveness=args.liveness or None, log_format=args.log_format, verbose=args.verbose))
    return 0


def cmd_rbac(args: argparse.Namespace) -> int:
    import yaml

    from tuneops.operator.rbac import cluster_role, cluster_role_binding

    docs = [cluster_role(args.name)]
    if args.service_account:
        sa_namespace, _, sa_name = args.service_account.rpartition("/")
        docs.append(cluster_role_binding(sa_name, sa_namespace or "default", args.name))
    if args.peering_crds:
        from tuneops.operator.runtime import peering_crds

        docs += peering_crds()
    print(yaml.safe_dump_all(docs, sort_keys=False), end="")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("operator", help="run the kopf operator (FineTuneJob, ModelVersion, ModelDeployment)")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", metavar="NS", help="watch this namespace (repeatable)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    p.add_argument("--standalone", action="store_true", help="no peering (a single replica or a test)")
    p.add_argument("--peering", default="tuneops", help="KopfPeering name shared by replicas (default tuneops)")
    p.add_argument("--priority", type=int, default=None, help="peering priority (default: random)")
    p.add_argument("--metrics-port", type=int, default=8080, help="Prometheus /metrics port (0 = off)")
    p.add_argument("--liveness", default="http://0.0.0.0:8081/healthz", help="kopf liveness endpoint ('' = off)")
    p.add_argument("--log-format", choices=("json", "plain"), default="json")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_run)
    inner = p.add_subparsers(dest="operator_command", metavar="SUBCOMMAND")
    r = inner.add_parser("rbac", help="print the operator's least-privilege ClusterRole (YAML)")
    r.add_argument("--name", default="tuneops-operator")
    r.add_argument("--service-account", metavar="NS/NAME", help="also print a ClusterRoleBinding to this account")
    r.add_argument("--peering-crds", action="store_true", help="also print kopf's peering CRDs")
    r.set_defaults(func=cmd_rbac)
