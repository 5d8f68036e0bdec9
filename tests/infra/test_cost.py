"""`tuneops infra cost`: the GPU node group estimate from a stack config (pure Python, no Pulumi needed)."""

from __future__ import annotations

import pytest

from tuneops.cli import main
from tuneops.commands import infra as cost

from .conftest import INFRA_DIR

from tuneops_infra.config import load_stack_file  # noqa: E402  (pure Python)


def _stack(*groups, **config):
    return {"config": {"tuneops:gpuNodeGroups": list(groups), **{f"tuneops:{k}": v for k, v in config.items()}}}


def test_training_defaults_to_spot_serving_to_on_demand():
    groups = cost.gpu_node_groups(_stack({"name": "t", "workload": "training", "instanceTypes": ["g5.xlarge"]},
                                         {"name": "s", "workload": "serving", "instanceTypes": ["g5.xlarge"]},
                                         {"name": "x", "instanceTypes": ["g5.xlarge"]}))
    assert [g["capacityType"] for g in groups] == ["SPOT", "ON_DEMAND", "SPOT"]


def test_hourly_cost_scales_with_nodes_and_spot_discount():
    [row] = cost.estimate(cost.gpu_node_groups(_stack(
        {"name": "t", "workload": "serving", "instanceTypes": ["g5.xlarge"], "minSize": 1, "desiredSize": 2,
         "maxSize": 4})), prices={"g5.xlarge": 1.0})
    assert (row["perNode"], row["minPerHour"], row["desiredPerHour"], row["maxPerHour"]) == (1.0, 1.0, 2.0, 4.0)
    [spot] = cost.estimate([{**row, "capacityType": "SPOT"}], prices={"g5.xlarge": 1.0}, spot_discount=0.7)
    assert spot["maxPerHour"] == pytest.approx(4 * 0.3)


def test_mixed_instance_types_are_priced_at_the_dearest():
    assert cost.node_price(["g6.xlarge", "g5.xlarge"], "ON_DEMAND", prices={"g6.xlarge": 0.8, "g5.xlarge": 1.0},
                           spot_discount=0.5) == 1.0


def test_unknown_instance_type_is_an_error_naming_it():
    with pytest.raises(cost.CostError, match="x9.huge"):
        cost.estimate([{"name": "g", "instanceTypes": ["x9.huge"], "capacityType": "SPOT", "minSize": 0,
                        "desiredSize": 0, "maxSize": 1}])


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_cost_reads_the_same_node_groups_as_the_pulumi_program(stack):
    yaml = pytest.importorskip("yaml")
    path = INFRA_DIR / f"Pulumi.{stack}.yaml"
    program = load_stack_file(path, mlflow_db_password="x").gpu_node_groups
    estimated = cost.gpu_node_groups(yaml.safe_load(path.read_text()))
    assert [(g["name"], g["capacityType"], tuple(g["instanceTypes"]), g["minSize"], g["desiredSize"], g["maxSize"])
            for g in estimated] == [(g.name, g.capacity_type, g.instance_types, g.min_size, g.desired_size,
                                     g.max_size) for g in program]


def test_cli_prints_a_table_with_totals(capsys):
    assert main(["infra", "cost", str(INFRA_DIR / "Pulumi.prod.yaml"), "--price", "p4d.24xlarge=20",
                 "--spot-discount", "0.5"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert lines["gpu-serve"][2] == "ON_DEMAND"
    assert lines["gpu-train-a100"][4] == "20.00"  # the override wins
    assert lines["gpu-train-spot"][2] == "SPOT"
    # TOTAL at max = 4 * g6e.12xlarge spot + 2 * 20 + 8 * g6.2xlarge
    expected = 4 * cost.ON_DEMAND_USD_PER_HOUR["g6e.12xlarge"] * 0.5 + 2 * 20 + 8 * cost.ON_DEMAND_USD_PER_HOUR["g6.2xlarge"]
    assert float(lines["TOTAL"][-1]) == pytest.approx(expected, abs=0.01)
    assert "/month" in out


def test_cli_reports_bad_input(tmp_path, capsys):
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text("config:\n  tuneops:gpuNodeGroups:\n    - {name: g, instanceTypes: [x9.huge]}\n")
    assert main(["infra", "cost", str(path)]) == 1
    assert "x9.huge" in capsys.readouterr().err
