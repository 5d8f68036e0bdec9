"""VPC with public subnets (NAT, load balancers) and private subnets (nodes, database) across AZs."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from .context import Context


@dataclass(frozen=True)
class Network:
    vpc: aws.ec2.Vpc
    private_subnets: list[aws.ec2.Subnet]
    public_subnets: list[aws.ec2.Subnet]

    @property
    def private_subnet_ids(self) -> list[pulumi.Output[str]]:
        return [s.id for s in self.private_subnets]


def subnet_cidrs(vpc_cidr: str, zones: int) -> tuple[list[str], list[str]]:
    """Split the VPC into 16 equal blocks: the first `zones` private (big: pods take VPC IPs with the
    AWS CNI), the next `zones` public."""
    network = ipaddress.ip_network(vpc_cidr)
    blocks = [str(b) for b in network.subnets(prefixlen_diff=4)]
    if 2 * zones > len(blocks):
        raise ValueError(f"vpcCidr {vpc_cidr} is too small for {zones} zones")
    return blocks[:zones], blocks[zones:2 * zones]


def build_network(ctx: Context) -> Network:
    cfg = ctx.cfg
    name = cfg.name
    vpc = aws.ec2.Vpc(f"{name}-vpc", cidr_block=cfg.vpc_cidr, enable_dns_hostnames=True,
                      enable_dns_support=True, tags=ctx.tags(f"{name}-vpc"), opts=ctx.opts())
    igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags=ctx.tags(f"{name}-igw"),
                                  opts=ctx.opts())
    private_cidrs, public_cidrs = subnet_cidrs(cfg.vpc_cidr, len(cfg.availability_zones))
    cluster_tag = {f"kubernetes.io/cluster/{cfg.cluster_name}": "shared"}

    public_rt = aws.ec2.RouteTable(
        f"{name}-public-rt", vpc_id=vpc.id,
        routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=igw.id)],
        tags=ctx.tags(f"{name}-public-rt"), opts=ctx.opts())
    public_subnets = []
    for zone, cidr in zip(cfg.availability_zones, public_cidrs):
        subnet = aws.ec2.Subnet(
            f"{name}-public-{zone}", vpc_id=vpc.id, cidr_block=cidr, availability_zone=zone,
            map_public_ip_on_launch=False,
            tags=ctx.tags(f"{name}-public-{zone}", **cluster_tag, **{"kubernetes.io/role/elb": "1"}),
            opts=ctx.opts())
        aws.ec2.RouteTableAssociation(f"{name}-public-{zone}", subnet_id=subnet.id,
                                      route_table_id=public_rt.id, opts=ctx.opts())
        public_subnets.append(subnet)

    # One NAT (cheap, dev) or one per AZ (an AZ outage does not cut the others off, prod).
    nat_count = len(public_subnets) if cfg.nat_mode == "perAz" else 1
    nats = []
    for i in range(nat_count):
        zone = cfg.availability_zones[i]
        eip = aws.ec2.Eip(f"{name}-nat-{zone}", domain="vpc", tags=ctx.tags(f"{name}-nat-{zone}"),
                          opts=ctx.opts())
        nats.append(aws.ec2.NatGateway(f"{name}-nat-{zone}", allocation_id=eip.id,
                                       subnet_id=public_subnets[i].id, tags=ctx.tags(f"{name}-nat-{zone}"),
                                       opts=ctx.opts(depends_on=[igw])))

    private_subnets, private_route_tables = [], []
    for i, (zone, cidr) in enumerate(zip(cfg.availability_zones, private_cidrs)):
        subnet = aws.ec2.Subnet(
            f"{name}-private-{zone}", vpc_id=vpc.id, cidr_block=cidr, availability_zone=zone,
            map_public_ip_on_launch=False,
            tags=ctx.tags(f"{name}-private-{zone}", **cluster_tag, **{"kubernetes.io/role/internal-elb": "1"}),
            opts=ctx.opts())
        route_table = aws.ec2.RouteTable(
            f"{name}-private-{zone}", vpc_id=vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nats[i % nat_count].id)],
            tags=ctx.tags(f"{name}-private-{zone}"), opts=ctx.opts())
        aws.ec2.RouteTableAssociation(f"{name}-private-{zone}", subnet_id=subnet.id,
                                      route_table_id=route_table.id, opts=ctx.opts())
        private_subnets.append(subnet)
        private_route_tables.append(route_table)

    # S3 traffic (datasets, checkpoints, models: the bulk of the bytes) bypasses the NAT: free and faster.
    aws.ec2.VpcEndpoint(f"{name}-s3", vpc_id=vpc.id, service_name=f"com.amazonaws.{cfg.region}.s3",
                        vpc_endpoint_type="Gateway",
                        route_table_ids=[rt.id for rt in private_route_tables],
                        tags=ctx.tags(f"{name}-s3"), opts=ctx.opts())
    return Network(vpc=vpc, private_subnets=private_subnets, public_subnets=public_subnets)
