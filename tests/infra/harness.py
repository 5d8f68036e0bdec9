"""Run the Pulumi program under `pulumi.runtime.set_mocks` and record every resource it registers.

The mocks stand in for AWS/Kubernetes (not reachable here): they echo inputs back as outputs and add the
few computed attributes the program reads (ARNs, ids, endpoints, OIDC issuer, ECR URLs)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pulumi

INFRA_DIR = Path(__file__).resolve().parents[2] / "infra"
if str(INFRA_DIR) not in sys.path:
    sys.path.insert(0, str(INFRA_DIR))

from tuneops_infra.config import InfraConfig  # noqa: E402
from tuneops_infra.policy import Resource  # noqa: E402

ACCOUNT = "123456789012"


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self, region: str) -> None:
        self.region = region
        self.resources: list[Resource] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        inputs = dict(args.inputs)
        physical = inputs.get("bucket") if args.typ == "aws:s3/bucket:Bucket" else inputs.get("name")
        resource_id = str(physical or f"{args.name}-id")
        self.resources.append(Resource(type=args.typ, name=args.name, inputs=inputs, id=resource_id))
        return resource_id, {**inputs, **self._computed(args.typ, args.name, inputs, resource_id)}

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list | None]:
        return {}, None

    def _computed(self, typ: str, name: str, inputs: dict, resource_id: str) -> dict[str, Any]:
        service = typ.split(":")[1].split("/")[0]
        out: dict[str, Any] = {"arn": f"arn:aws:{service}:{self.region}:{ACCOUNT}:{name}"}
        if typ == "aws:s3/bucket:Bucket":
            out["arn"] = f"arn:aws:s3:::{resource_id}"
        elif typ == "aws:ecr/repository:Repository":
            out["repositoryUrl"] = f"{ACCOUNT}.dkr.ecr.{self.region}.amazonaws.com/{inputs['name']}"
        elif typ == "aws:eks/cluster:Cluster":
            out.update(endpoint=f"https://{name}.gr7.{self.region}.eks.amazonaws.com",
                       certificateAuthority={"data": "Q0EK"},
                       identities=[{"oidcs": [{"issuer": f"https://oidc.eks.{self.region}.amazonaws.com/id/ABC"}]}],
                       vpcConfig={**inputs.get("vpcConfig", {}), "clusterSecurityGroupId": "sg-cluster"})
        elif typ == "aws:iam/openIdConnectProvider:OpenIdConnectProvider":
            url = inputs["url"].removeprefix("https://")
            out.update(url=url, arn=f"arn:aws:iam::{ACCOUNT}:oidc-provider/{url}")
        elif typ == "aws:kms/key:Key":
            out["keyId"] = f"{name}-key-id"
        elif typ == "aws:rds/instance:Instance":
            out.update(address=f"{name}.rds.example", endpoint=f"{name}.rds.example:5432")
        return out


def run_program(cfg: InfraConfig) -> tuple[list[Resource], dict[str, Any]]:
    """Build the whole program under mocks; return the registered resources and the resolved outputs."""
    from tuneops_infra import program

    mocks = RecordingMocks(cfg.region)
    pulumi.runtime.set_mocks(mocks, project="tuneops", stack=cfg.stack, preview=False)
    resolved: dict[str, Any] = {}

    @pulumi.runtime.test
    def build():
        outputs = program.build(cfg)
        return pulumi.Output.from_input(outputs).apply(resolved.update)

    build()  # returns once every registration (and its RPC) has completed
    return mocks.resources, resolved
