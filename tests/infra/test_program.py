"""The whole Pulumi program, built under `pulumi.runtime.set_mocks` from the real dev/prod stack files, has
the properties the platform relies on."""

from __future__ import annotations

import dataclasses
import importlib
import json
import warnings
from pathlib import Path

import pytest

from .conftest import INFRA_DIR, build, needs_pulumi

# The SDK warns about its own deprecated classes when a service module is first imported.
pytestmark = [needs_pulumi, pytest.mark.filterwarnings("ignore::DeprecationWarning:pulumi_aws")]

from tuneops_infra import policy  # noqa: E402  (pure Python: importable without pulumi)
from tuneops_infra.config import ConfigError, load_stack_file  # noqa: E402


def _allowed_s3(built) -> list[str]:
    arns = [f"arn:aws:s3:::{b.id}" for b in built.of_type(policy.BUCKET)]
    return arns + [f"{a}/*" for a in arns]


def _policy_by_name(built, name: str) -> dict:
    [doc] = [json.loads(r.inputs["policy"]) for r in built.of_type(policy.IAM_POLICY) if r.name == name]
    return doc


def _allowed_actions(doc: dict, resource: str) -> set[str]:
    """Actions an Allow statement grants on exactly this resource ARN/pattern."""
    actions = set()
    for statement in doc["Statement"]:
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if statement["Effect"] == "Allow" and resource in resources:
            actions |= set(statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]])
    return actions


# --- S3 -------------------------------------------------------------------------------------------------

def test_buckets_private_encrypted_versioned(stack):
    buckets = stack.of_type(policy.BUCKET)
    assert sorted(b.id for b in buckets) == sorted(stack.cfg.bucket_name(k) for k in ("datasets", "checkpoints", "models"))
    assert policy.bucket_violations(stack.resources) == []


def test_buckets_encrypted_with_the_stack_key(stack):
    [key] = stack.of_type("aws:kms/key:Key")
    assert key.inputs["enableKeyRotation"] is True
    for enc in stack.of_type(policy.ENCRYPTION):
        default = enc.inputs["rules"][0]["applyServerSideEncryptionByDefault"]
        assert default["kmsMasterKeyId"] == stack.outputs["kmsKeyArn"]


def test_old_checkpoints_expire_but_models_and_datasets_are_kept(stack):
    by_bucket = {r.inputs["bucket"]: r.inputs["rules"] for r in stack.of_type(
        "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")}
    expiring = {bucket: [r["expiration"]["days"] for r in rules if r.get("expiration")]
                for bucket, rules in by_bucket.items()}
    assert expiring[stack.cfg.bucket_name("checkpoints")] == [stack.cfg.checkpoint_retention_days]
    assert expiring[stack.cfg.bucket_name("models")] == []
    assert expiring[stack.cfg.bucket_name("datasets")] == []
    for rules in by_bucket.values():  # versions (the DR safety net) are kept for the configured window
        [noncurrent] = [r["noncurrentVersionExpiration"] for r in rules if r.get("noncurrentVersionExpiration")]
        assert noncurrent["noncurrentDays"] == stack.cfg.noncurrent_version_retention_days


# --- EKS ------------------------------------------------------------------------------------------------

def test_gpu_node_groups_tainted_labelled_and_bounded_per_config(stack):
    groups = {g.inputs["nodeGroupName"]: g for g in stack.of_type(policy.NODE_GROUP)}
    assert len(stack.cfg.gpu_node_groups) >= 1
    for want in stack.cfg.gpu_node_groups:
        got = groups[f"{stack.cfg.cluster_name}-{want.name}"]
        assert policy.gpu_node_group_violations(got) == []
        assert got.inputs["scalingConfig"] == {"minSize": want.min_size, "desiredSize": want.desired_size,
                                               "maxSize": want.max_size}
        assert got.inputs["instanceTypes"] == list(want.instance_types)
        assert got.inputs["capacityType"] == want.capacity_type
        assert got.inputs["amiType"] == "AL2023_x86_64_NVIDIA"
        assert got.inputs["labels"]["tuneops.io/workload"] == want.workload
        assert got.inputs["tags"][f"k8s.io/cluster-autoscaler/{stack.cfg.cluster_name}"] == "owned"
    system = groups[f"{stack.cfg.cluster_name}-system"]
    assert not system.inputs.get("taints"), "the system group must take ordinary pods"


def test_training_defaults_to_spot_and_serving_to_on_demand(prod):
    capacity = {g.name: g.capacity_type for g in prod.cfg.gpu_node_groups}
    assert capacity == {"gpu-train-spot": "SPOT",  # no capacityType in the file: the default
                        "gpu-train-a100": "ON_DEMAND",  # explicitly overridden
                        "gpu-serve": "ON_DEMAND"}


def test_eks_endpoint_access_follows_config(dev, prod):
    dev_vpc = dev.of_type("aws:eks/cluster:Cluster")[0].inputs["vpcConfig"]
    assert dev_vpc["endpointPublicAccess"] is True
    assert dev_vpc["publicAccessCidrs"] == list(dev.cfg.public_access_cidrs) == ["203.0.113.0/24"]
    prod_vpc = prod.of_type("aws:eks/cluster:Cluster")[0].inputs["vpcConfig"]
    assert prod_vpc["endpointPublicAccess"] is False
    assert prod_vpc["endpointPrivateAccess"] is True
    assert not prod_vpc.get("publicAccessCidrs")
    # Nodes and the control plane ENIs live in the private subnets only.
    private = {r.id for r in prod.resources if r.type == "aws:ec2/subnet:Subnet" and "-private-" in r.name}
    assert set(prod_vpc["subnetIds"]) == private and len(private) == len(prod.cfg.availability_zones)


def test_public_endpoint_without_cidrs_is_rejected(dev):
    with pytest.raises(ConfigError, match="publicAccessCidrs"):
        dataclasses.replace(dev.cfg, public_access_cidrs=())


def test_secrets_encrypted_and_control_plane_logged(stack):
    [cluster] = stack.of_type("aws:eks/cluster:Cluster")
    assert cluster.inputs["encryptionConfig"]["resources"] == ["secrets"]
    assert cluster.inputs["encryptionConfig"]["provider"]["keyArn"] == stack.outputs["kmsKeyArn"]
    assert "audit" in cluster.inputs["enabledClusterLogTypes"]
    log_groups = {r.inputs["name"]: r.inputs for r in stack.of_type("aws:cloudwatch/logGroup:LogGroup")}
    assert log_groups[f"/aws/eks/{stack.cfg.cluster_name}/cluster"]["retentionInDays"] == stack.cfg.log_retention_days


def test_nat_per_config(dev, prod):
    assert len(dev.of_type("aws:ec2/natGateway:NatGateway")) == 1
    assert len(prod.of_type("aws:ec2/natGateway:NatGateway")) == len(prod.cfg.availability_zones)


# --- IAM ------------------------------------------------------------------------------------------------

def test_iam_policies_scoped_to_project_buckets(stack):
    policies = stack.of_type(policy.IAM_POLICY)
    assert len(policies) >= 5
    for p in policies:
        assert policy.iam_policy_violations(p.inputs["policy"], allowed_s3_arns=_allowed_s3(stack)) == [], p.name


def test_each_workload_gets_only_what_it_needs(stack):
    name = stack.cfg.name
    arn = {kind: f"arn:aws:s3:::{stack.cfg.bucket_name(kind)}/*" for kind in ("datasets", "checkpoints", "models")}
    training = _policy_by_name(stack, f"{name}-training")
    assert "s3:PutObject" in _allowed_actions(training, arn["checkpoints"])
    assert "s3:PutObject" in _allowed_actions(training, arn["models"])
    assert _allowed_actions(training, arn["datasets"]) == {"s3:GetObject", "s3:GetObjectVersion"}
    serving = _policy_by_name(stack, f"{name}-serving")
    assert _allowed_actions(serving, arn["models"]) == {"s3:GetObject", "s3:GetObjectVersion"}
    assert not _allowed_actions(serving, arn["datasets"]) and not _allowed_actions(serving, arn["checkpoints"])
    operator = _policy_by_name(stack, f"{name}-operator")
    writes = [a for s in operator["Statement"] for a in s["Action"] if a.startswith(policy.S3_WRITE_PREFIXES)]
    assert writes == []


def test_irsa_roles_trust_exactly_one_service_account(stack):
    roles = [r for r in stack.of_type("aws:iam/role:Role") if "tuneops.io/workload" in (r.inputs.get("tags") or {})]
    assert {r.inputs["tags"]["tuneops.io/workload"] for r in roles} >= {"operator", "training", "serving"}
    for role in roles:
        [statement] = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
        assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
        assert statement["Principal"]["Federated"] == stack.outputs["oidcProviderArn"]
        conditions = statement["Condition"]["StringEquals"]
        [sub] = [v for k, v in conditions.items() if k.endswith(":sub")]
        assert sub.startswith("system:serviceaccount:") and "*" not in sub
    ns = stack.cfg.charts.workload_namespace
    training = next(r for r in roles if r.inputs["tags"]["tuneops.io/workload"] == "training")
    assert f"system:serviceaccount:{ns}:tuneops-training" in training.inputs["assumeRolePolicy"]


# --- Tags -----------------------------------------------------------------------------------------------

def _supports_tags(type_token: str) -> bool:
    """Ask the pulumi_aws SDK itself whether the resource type has a `tags` property."""
    _, module, cls = type_token.split(":")
    with warnings.catch_warnings():  # importing a service module warns about its deprecated classes
        warnings.simplefilter("ignore", DeprecationWarning)
        py_module = importlib.import_module(f"pulumi_aws.{module.split('/')[0]}")
        return hasattr(getattr(py_module, cls), "tags")


def test_every_taggable_resource_is_tagged(stack):
    aws_resources = [r for r in stack.resources if r.type.startswith("aws:")]
    taggable = [r for r in aws_resources if _supports_tags(r.type)]
    assert len({r.type for r in taggable}) >= 20, "the tag check would be vacuous"
    required = stack.cfg.base_tags()
    assert set(stack.cfg.tags) <= set(required)  # the stack's own tags (Team, CostCenter...) are included
    problems = [p for r in taggable for p in policy.tag_violations(r, required)]
    assert problems == []
    [provider] = stack.of_type("pulumi:providers:aws")
    assert json.loads(provider.inputs["defaultTags"])["tags"] == required  # the safety net, too


def test_kubernetes_objects_are_labelled(stack):
    for r in stack.resources:
        if r.type in ("kubernetes:core/v1:Namespace", "kubernetes:core/v1:ServiceAccount"):
            assert r.inputs["metadata"]["labels"]["tuneops.io/stack"] == stack.cfg.stack


# --- Helm releases --------------------------------------------------------------------------------------

def _release(stack, name: str):
    [r] = [r for r in stack.of_type("kubernetes:helm.sh/v3:Release") if r.inputs["name"] == name]
    return r


def test_tuneops_release_points_at_the_built_images(stack):
    release = _release(stack, "tuneops")
    values = release.inputs["values"]
    repos = stack.outputs["ecrRepositories"]
    assert values["operator"]["image"] == {"repository": repos["operator"], "tag": stack.cfg.image_tag}
    runtime = f"{repos['runtime']}:{stack.cfg.image_tag}"
    assert values["defaults"]["trainingImage"] == runtime
    assert values["defaults"]["servingImages"]["builtin"] == runtime
    assert values["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"] == stack.outputs["roleArns"]["operator"]
    assert (INFRA_DIR / release.inputs["chart"]).resolve() == (INFRA_DIR.parent / "charts" / "tuneops").resolve()


@pytest.mark.filterwarnings("ignore:The metaschema specified by:DeprecationWarning")
def test_tuneops_values_pass_the_chart_schema(stack):
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema not installed")
    yaml = pytest.importorskip("yaml")
    chart = INFRA_DIR.parent / "charts" / "tuneops"
    if not (chart / "values.schema.json").exists():
        pytest.skip("charts/tuneops has no values.schema.json yet")
    defaults = yaml.safe_load((chart / "values.yaml").read_text())
    merged = _merge(defaults, _release(stack, "tuneops").inputs["values"])  # what helm validates
    jsonschema.validate(merged, json.loads((chart / "values.schema.json").read_text()))


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def test_device_plugin_runs_on_gpu_nodes_only(stack):
    values = _release(stack, "nvidia-device-plugin").inputs["values"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in values["tolerations"]
    assert values["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    gpu_labels = [g.inputs["labels"] for g in stack.of_type(policy.NODE_GROUP) if g.inputs.get("taints")]
    assert all(labels.get("nvidia.com/gpu.present") == "true" for labels in gpu_labels)


def test_argocd_can_own_the_tuneops_release(dev):
    cfg = dataclasses.replace(dev.cfg, charts=dataclasses.replace(dev.cfg.charts, install_tuneops=False))
    built = build(cfg)
    names = {r.inputs["name"] for r in built.of_type("kubernetes:helm.sh/v3:Release")}
    assert "tuneops" not in names and {"argocd", "nvidia-device-plugin"} <= names
    # The values are still exported for the Argo CD Application, with this stack's images.
    values = built.outputs["tuneopsChartValues"]
    assert values["operator"]["image"]["repository"] == built.outputs["ecrRepositories"]["operator"]


def test_mlflow_uses_rds_when_enabled(dev, prod):
    assert not dev.of_type("aws:rds/instance:Instance")
    assert "backendStore" not in _release(dev, "mlflow").inputs["values"]
    [db] = prod.of_type("aws:rds/instance:Instance")
    assert db.inputs["publiclyAccessible"] is False and db.inputs["storageEncrypted"] is True
    assert db.inputs["backupRetentionPeriod"] == prod.cfg.database.backup_retention_days >= 1
    assert db.inputs["deletionProtection"] is True and db.inputs["skipFinalSnapshot"] is False
    postgres = _release(prod, "mlflow").inputs["values"]["backendStore"]["postgres"]
    assert postgres["host"] == "tuneops-prod-mlflow.rds.example"


def test_charts_can_be_left_out(dev):
    built = build(dataclasses.replace(dev.cfg, charts=dataclasses.replace(dev.cfg.charts, deploy=False)))
    assert not [r for r in built.resources if r.type.startswith("kubernetes:")]
    assert built.outputs["helmReleases"] == []
    assert built.of_type("aws:eks/cluster:Cluster")


# --- Monitoring -----------------------------------------------------------------------------------------

def test_alarms_and_budget_notify_the_alert_topic(stack):
    topic = stack.outputs["alertsTopicArn"]
    alarms = stack.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    assert {a.inputs["metricName"] for a in alarms} >= {"cluster_failed_node_count", "node_gpu_temperature"}
    assert all(a.inputs["alarmActions"] == [topic] for a in alarms)
    [budget] = stack.of_type("aws:budgets/budget:Budget")
    assert float(budget.inputs["limitAmount"]) == stack.cfg.monthly_budget_usd
    assert all(n["subscriberSnsTopicArns"] == [topic] for n in budget.inputs["notifications"])
    [topic_policy] = stack.of_type("aws:sns/topicPolicy:TopicPolicy")
    publishers = {st["Principal"]["Service"] for st in json.loads(topic_policy.inputs["policy"])["Statement"]}
    assert publishers == {"budgets.amazonaws.com", "cloudwatch.amazonaws.com"}
    emails = [s.inputs["endpoint"] for s in stack.of_type("aws:sns/topicSubscription:TopicSubscription")]
    assert emails == list(stack.cfg.alarm_emails)


# --- Config ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    ({"gpuNodeGroups": [{"name": "g", "instanceTypes": ["g5.xlarge"], "minSize": 3, "maxSize": 1}]}, "minSize"),
    ({"gpuNodeGroups": [{"name": "g", "instanceTypes": [], "maxSize": 1}]}, "instanceTypes"),
    ({"gpuNodeGroups": [{"name": "g", "instanceTypes": ["g5.xlarge"], "capacityType": "CHEAP"}]}, "capacityType"),
    ({"availabilityZones": ["us-east-1a"]}, "two"),
    ({"mlflowDatabase": {"enabled": True}}, "mlflowDbPassword"),
])
def test_inconsistent_config_is_rejected(tmp_path: Path, change, message):
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load((INFRA_DIR / "Pulumi.dev.yaml").read_text())
    doc["config"].update({f"tuneops:{k}": v for k, v in change.items()})
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=message):
        load_stack_file(path)


def test_stack_config_is_read_through_pulumi_config(dev):
    """The path `pulumi up` takes: values arrive as strings (structured ones JSON-encoded) in pulumi.Config."""
    import pulumi
    import yaml

    from tuneops_infra.config import InfraConfig

    doc = yaml.safe_load((INFRA_DIR / "Pulumi.dev.yaml").read_text())["config"]
    as_pulumi = {k: v if isinstance(v, str) else json.dumps(v) for k, v in doc.items()}
    from .harness import RecordingMocks

    pulumi.runtime.set_mocks(RecordingMocks("us-east-1"), project="tuneops", stack="dev")
    pulumi.runtime.set_all_config(as_pulumi)
    try:
        assert InfraConfig.from_pulumi() == dev.cfg
    finally:
        pulumi.runtime.set_all_config({})


def test_cluster_credentials_are_short_lived(stack):
    [provider] = stack.of_type("pulumi:providers:kubernetes")
    kubeconfig = json.loads(provider.inputs["kubeconfig"])
    [user] = kubeconfig["users"]
    assert user["user"]["exec"]["args"] == ["eks", "get-token", "--cluster-name", stack.cfg.cluster_name,
                                            "--region", stack.cfg.region]
    assert "token" not in user["user"]
    assert kubeconfig["clusters"][0]["cluster"]["server"] == stack.outputs["clusterEndpoint"]
