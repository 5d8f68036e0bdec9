"""Optional RDS PostgreSQL for MLflow's backend store: private, encrypted, backed up (DR: point-in-time
restore within the retention window, final snapshot on delete)."""

from __future__ import annotations

import pulumi_aws as aws

from .context import Context
from .eks import Cluster
from .network import Network

MLFLOW_DB = "mlflow"
MLFLOW_USER = "mlflow"


def build_database(ctx: Context, network: Network, cluster: Cluster, key: aws.kms.Key) -> aws.rds.Instance:
    cfg, db = ctx.cfg, ctx.cfg.database
    name = f"{cfg.name}-mlflow"
    subnets = aws.rds.SubnetGroup(name, subnet_ids=network.private_subnet_ids, tags=ctx.tags(name),
                                  opts=ctx.opts())
    # Only pods in the cluster (the cluster security group covers managed nodes) reach PostgreSQL.
    sg = aws.ec2.SecurityGroup(
        name, vpc_id=network.vpc.id, description="MLflow PostgreSQL from EKS nodes",
        ingress=[aws.ec2.SecurityGroupIngressArgs(
            protocol="tcp", from_port=5432, to_port=5432,
            security_groups=[cluster.cluster.vpc_config.cluster_security_group_id])],
        tags=ctx.tags(name), opts=ctx.opts())
    return aws.rds.Instance(
        name, identifier=name, engine="postgres", engine_version=db.engine_version,
        instance_class=db.instance_class, allocated_storage=db.allocated_storage_gib,
        max_allocated_storage=db.max_allocated_storage_gib, storage_type="gp3",
        storage_encrypted=True, kms_key_id=key.arn, db_name=MLFLOW_DB, username=MLFLOW_USER,
        password=cfg.mlflow_db_password, db_subnet_group_name=subnets.name, vpc_security_group_ids=[sg.id],
        publicly_accessible=False, multi_az=db.multi_az, backup_retention_period=db.backup_retention_days,
        copy_tags_to_snapshot=True, deletion_protection=db.deletion_protection,
        skip_final_snapshot=False, final_snapshot_identifier=f"{name}-final",
        auto_minor_version_upgrade=True, tags=ctx.tags(name), opts=ctx.opts())
