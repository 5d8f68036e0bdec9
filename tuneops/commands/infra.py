"""`tuneops infra cost STACK.yaml`: hourly cost estimate of the GPU node groups of a Pulumi stack config.

Reads the same `tuneops:gpuNodeGroups` keys as the Pulumi program in infra/ (and the same defaulting rule:
training groups run on spot unless they say otherwise). Pure Python; prices are approximate list prices and
can be overridden from the stack config (`tuneops:instancePrices`, `tuneops:spotDiscount`) or the command
line (`--price TYPE=USD`, `--spot-discount`)."""

import argparse

# Approximate on-demand Linux prices, USD per instance-hour, us-east-1 (AWS list prices; they change and
# differ per region: override them for real budgeting). p4d is the list price before AWS's 2025 P4/P5 cuts.
ON_DEMAND_USD_PER_HOUR = {
    "g4dn.xlarge": 0.526, "g4dn.2xlarge": 0.752, "g4dn.12xlarge": 3.912,
    "g5.xlarge": 1.006, "g5.2xlarge": 1.212, "g5.4xlarge": 1.624, "g5.8xlarge": 2.448,
    "g5.12xlarge": 5.672, "g5.24xlarge": 8.144, "g5.48xlarge": 16.288,
    "g6.xlarge": 0.805, "g6.2xlarge": 0.978, "g6.4xlarge": 1.323, "g6.8xlarge": 2.014,
    "g6.12xlarge": 4.602, "g6.48xlarge": 13.350,
    "g6e.xlarge": 1.861, "g6e.2xlarge": 2.242, "g6e.12xlarge": 10.493, "g6e.48xlarge": 30.131,
    "p4d.24xlarge": 32.773,
}
# Spot is typically 60-70% below on-demand for G-family GPUs; a conservative single factor.
DEFAULT_SPOT_DISCOUNT = 0.6
HOURS_PER_MONTH = 730


class CostError(ValueError):
    """Unknown instance type or malformed stack config; the message says which."""


def default_capacity_type(workload: str) -> str:
    # Same rule as infra/tuneops_infra/config.py: training tolerates interruptions (checkpoints), serving not.
    return "SPOT" if workload == "training" else "ON_DEMAND"


def gpu_node_groups(stack_config: dict) -> list[dict]:
    """Normalised GPU node groups from a parsed `Pulumi.<stack>.yaml` document."""
    config = stack_config.get("config") or {}
    groups = []
    for raw in config.get("tuneops:gpuNodeGroups") or []:
        workload = raw.get("workload", "training")
        min_size = int(raw.get("minSize", 0))
        groups.append({
            "name": raw["name"],
            "workload": workload,
            "capacityType": str(raw.get("capacityType") or default_capacity_type(workload)).upper().replace("-", "_"),
            "instanceTypes": list(raw.get("instanceTypes") or []),
            "minSize": min_size,
            "desiredSize": int(raw.get("desiredSize", min_size)),
            "maxSize": int(raw.get("maxSize", 1)),
        })
    return groups


def node_price(instance_types: list[str], capacity_type: str, *, prices: dict[str, float],
               spot_discount: float) -> float:
    """Price of one node. A group may launch any of its types, so take the dearest: an upper bound."""
    if not instance_types:
        raise CostError("node group has no instanceTypes")
    unknown = [t for t in instance_types if t not in prices]
    if unknown:
        raise CostError(f"no price for {', '.join(unknown)}: pass --price TYPE=USD_PER_HOUR")
    on_demand = max(prices[t] for t in instance_types)
    return on_demand * (1 - spot_discount) if capacity_type == "SPOT" else on_demand


def estimate(groups: list[dict], *, prices: dict[str, float] | None = None,
             spot_discount: float = DEFAULT_SPOT_DISCOUNT) -> list[dict]:
    """Per group: price per node-hour and per hour at min / desired / max size."""
    if not 0 <= spot_discount < 1:
        raise CostError("spot discount must be in [0, 1)")
    table = {**ON_DEMAND_USD_PER_HOUR, **(prices or {})}
    rows = []
    for group in groups:
        per_node = node_price(group["instanceTypes"], group["capacityType"], prices=table,
                              spot_discount=spot_discount)
        rows.append({**group, "perNode": per_node,
                     **{f"{k}PerHour": per_node * group[f"{k}Size"] for k in ("min", "desired", "max")}})
    return rows


def format_table(rows: list[dict]) -> str:
    header = ["GROUP", "WORKLOAD", "CAPACITY", "INSTANCE TYPES", "$/NODE-H", "NODES min/des/max",
              "$/H MIN", "$/H DESIRED", "$/H MAX"]
    lines = [[r["name"], r["workload"], r["capacityType"], ",".join(r["instanceTypes"]), f"{r['perNode']:.2f}",
              f"{r['minSize']}/{r['desiredSize']}/{r['maxSize']}", f"{r['minPerHour']:.2f}",
              f"{r['desiredPerHour']:.2f}", f"{r['maxPerHour']:.2f}"] for r in rows]
    totals = {k: sum(r[f"{k}PerHour"] for r in rows) for k in ("min", "desired", "max")}
    lines.append(["TOTAL", "", "", "", "", "", f"{totals['min']:.2f}", f"{totals['desired']:.2f}",
                  f"{totals['max']:.2f}"])
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *lines]]
    text.append(f"~${totals['desired'] * HOURS_PER_MONTH:,.0f}/month at desired size, "
                f"~${totals['max'] * HOURS_PER_MONTH:,.0f}/month at max (730 h). Approximate list prices.")
    return "\n".join(text)


def _parse_price(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected TYPE=USD_PER_HOUR, got {text!r}")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None


def cmd_cost(args: argparse.Namespace) -> int:
    import sys

    import yaml

    try:
        with open(args.stack_file) as f:
            doc = yaml.safe_load(f) or {}
        config = doc.get("config") or {}
        prices = {**(config.get("tuneops:instancePrices") or {}), **dict(args.price or [])}
        discount = args.spot_discount
        if discount is None:
            discount = float(config.get("tuneops:spotDiscount", DEFAULT_SPOT_DISCOUNT))
        groups = gpu_node_groups(doc)
        if not groups:
            print(f"{args.stack_file}: no tuneops:gpuNodeGroups", file=sys.stderr)
            return 1
        rows = estimate(groups, prices=prices, spot_discount=discount)
    except (OSError, yaml.YAMLError, CostError, AttributeError, KeyError, TypeError, ValueError) as exc:
        print(f"{args.stack_file}: {exc}", file=sys.stderr)
        return 1
    print(format_table(rows))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    infra = subparsers.add_parser("infra", help="cloud infrastructure helpers (see infra/ and docs/cloud.md)")
    sub = infra.add_subparsers(dest="infra_command", required=True, metavar="COMMAND")
    p = sub.add_parser("cost", help="estimate the hourly cost of a stack's GPU node groups")
    p.add_argument("stack_file", metavar="STACK_YAML", help="a Pulumi.<stack>.yaml, e.g. infra/Pulumi.prod.yaml")
    p.add_argument("--price", action="append", type=_parse_price, metavar="TYPE=USD",
                   help="override the on-demand price of an instance type (repeatable)")
    p.add_argument("--spot-discount", type=float, default=None,
                   help=f"fraction below on-demand for spot (default: stack's tuneops:spotDiscount or "
                        f"{DEFAULT_SPOT_DISCOUNT})")
    p.set_defaults(func=cmd_cost)
