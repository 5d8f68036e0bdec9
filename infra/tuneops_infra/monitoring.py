"""CloudWatch: Container Insights (with NVIDIA GPU metrics) via the EKS add-on, log groups with
retention, alarms on node health and GPU health, and a monthly budget alarm; all notify one SNS topic."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi_aws as aws

from .context import Context
from .eks import Cluster
from .iam import WorkloadRoles

# Container Insights writes these groups; creating them first sets retention and tags.
INSIGHTS_LOG_GROUPS = ("application", "dataplane", "host", "performance")
GPU_HOT_CELSIUS = 85  # sustained temperatures above this throttle clocks and precede XID errors


@dataclass(frozen=True)
class Monitoring:
    topic: aws.sns.Topic
    alarms: list[aws.cloudwatch.MetricAlarm]
    budget: aws.budgets.Budget


def build_monitoring(ctx: Context, cluster: Cluster, roles: WorkloadRoles) -> Monitoring:
    cfg = ctx.cfg
    name = cfg.name
    # Not encrypted with the AWS-managed SNS key on purpose: CloudWatch and Budgets cannot publish to a topic
    # encrypted with it, and alert texts hold no data.
    topic = aws.sns.Topic(f"{name}-alerts", tags=ctx.tags(f"{name}-alerts"), opts=ctx.opts())
    aws.sns.TopicPolicy(f"{name}-alerts", arn=topic.arn, policy=topic.arn.apply(alert_topic_policy),
                        opts=ctx.opts(parent=topic))
    for i, email in enumerate(cfg.alarm_emails):
        aws.sns.TopicSubscription(f"{name}-alerts-{i}", topic=topic.arn, protocol="email", endpoint=email,
                                  opts=ctx.opts(parent=topic))

    log_groups = [aws.cloudwatch.LogGroup(
        f"{name}-insights-{kind}", name=f"/aws/containerinsights/{cfg.cluster_name}/{kind}",
        retention_in_days=cfg.log_retention_days,
        tags=ctx.tags(f"/aws/containerinsights/{cfg.cluster_name}/{kind}"), opts=ctx.opts())
        for kind in INSIGHTS_LOG_GROUPS]
    aws.eks.Addon(f"{name}-cloudwatch-observability", cluster_name=cluster.cluster.name,
                  addon_name="amazon-cloudwatch-observability", service_account_role_arn=roles.arn("cloudwatch-agent"),
                  resolve_conflicts_on_update="OVERWRITE", tags=ctx.tags(f"{name}-cloudwatch-observability"),
                  opts=ctx.opts(depends_on=[*log_groups, cluster.node_groups["system"]]))

    dims = {"ClusterName": cfg.cluster_name}
    alarms = [
        _alarm(ctx, topic, "failed-nodes", "nodes with failing conditions (GPU nodes: driver/XID faults, "
               "disk or memory pressure)", "cluster_failed_node_count", dims, "Maximum", 0,
               "GreaterThanThreshold", periods=3),
        _alarm(ctx, topic, "gpu-temperature", "a GPU node runs hot", "node_gpu_temperature", dims, "Maximum",
               GPU_HOT_CELSIUS, "GreaterThanThreshold", periods=3),
    ]
    budget = aws.budgets.Budget(
        f"{name}-monthly", name=f"{name}-monthly", budget_type="COST", time_unit="MONTHLY",
        limit_amount=f"{cfg.monthly_budget_usd:.2f}", limit_unit="USD",
        cost_filters=[aws.budgets.BudgetCostFilterArgs(name="TagKeyValue", values=[f"user:Stack${cfg.stack}"])],
        notifications=[
            aws.budgets.BudgetNotificationArgs(comparison_operator="GREATER_THAN", threshold=80,
                                               threshold_type="PERCENTAGE", notification_type="ACTUAL",
                                               subscriber_sns_topic_arns=[topic.arn]),
            aws.budgets.BudgetNotificationArgs(comparison_operator="GREATER_THAN", threshold=100,
                                               threshold_type="PERCENTAGE", notification_type="FORECASTED",
                                               subscriber_sns_topic_arns=[topic.arn]),
        ],
        tags=ctx.tags(f"{name}-monthly"), opts=ctx.opts())
    return Monitoring(topic=topic, alarms=alarms, budget=budget)


def alert_topic_policy(topic_arn: str) -> str:
    """AWS Budgets publishes as its service principal, which the default topic policy does not allow."""
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "Budgets", "Effect": "Allow", "Principal": {"Service": "budgets.amazonaws.com"},
        "Action": "SNS:Publish", "Resource": topic_arn}, {
        "Sid": "CloudWatch", "Effect": "Allow", "Principal": {"Service": "cloudwatch.amazonaws.com"},
        "Action": "SNS:Publish", "Resource": topic_arn}]})


def _alarm(ctx: Context, topic: aws.sns.Topic, suffix: str, description: str, metric: str,
           dimensions: dict[str, str], statistic: str, threshold: float, comparison: str,
           periods: int) -> aws.cloudwatch.MetricAlarm:
    name = f"{ctx.cfg.name}-{suffix}"
    return aws.cloudwatch.MetricAlarm(
        name, name=name, alarm_description=description, namespace="ContainerInsights", metric_name=metric,
        dimensions=dimensions, statistic=statistic, period=300, evaluation_periods=periods, threshold=threshold,
        comparison_operator=comparison, treat_missing_data="notBreaching",
        alarm_actions=[topic.arn], ok_actions=[topic.arn], tags=ctx.tags(name), opts=ctx.opts())
