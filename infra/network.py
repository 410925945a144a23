"""The host's security group: each allowed flow is its own rule resource (runbook "Network Requirements").

Never mix inline rules with rule resources: the two fight over the same group on every update.
The provider removes the all-traffic egress rule AWS adds to a new group, so egress is exactly the
rules below. Security groups do not filter the Amazon DNS resolver, the instance metadata service
or the Time Sync service, so none of those need a rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from .config import Egress


@dataclass
class NetworkArgs:
    name: str
    region: str
    vpc_id: str
    repo_host_ip: str
    app_cidrs: tuple[str, ...]
    app_security_group_ids: tuple[str, ...]
    extra_egress: tuple[Egress, ...]
    tags: dict[str, str]
    ssh_port: int = 22
    pg_port: int = 5432
    source_cidr: str = ""  # directTransfer: the target pulls the final dump from the source over SSH


class DatabaseNetwork(pulumi.ComponentResource):
    """Security group of the database host and every rule it has."""

    security_group: aws.ec2.SecurityGroup

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("trackerdb:infra:DatabaseNetwork", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            name=f"{args.name}-db",
            description="tracker database host: SSH with the pgBackRest repository host, PostgreSQL from the app",
            vpc_id=args.vpc_id,
            tags={**args.tags, "Name": f"{args.name}-db"},
            opts=child,
        )
        sg_id = self.security_group.id
        repo_cidr = f"{args.repo_host_ip}/32"

        def ingress(rname: str, **kw) -> aws.vpc.SecurityGroupIngressRule:
            return aws.vpc.SecurityGroupIngressRule(
                f"{name}-in-{rname}", security_group_id=sg_id, ip_protocol="tcp", tags=args.tags, opts=child, **kw
            )

        def egress(rname: str, **kw) -> aws.vpc.SecurityGroupEgressRule:
            return aws.vpc.SecurityGroupEgressRule(
                f"{name}-out-{rname}", security_group_id=sg_id, tags=args.tags, opts=child, **kw
            )

        # pgBackRest talks SSH both ways: archive-push/backup from here, backup/restore checks from the repo host.
        ingress("ssh-repo", cidr_ipv4=repo_cidr, from_port=args.ssh_port, to_port=args.ssh_port,
                description="SSH from the pgBackRest repository host only")
        egress("ssh-repo", cidr_ipv4=repo_cidr, ip_protocol="tcp", from_port=args.ssh_port, to_port=args.ssh_port,
               description="SSH to the pgBackRest repository host only")

        for i, sg in enumerate(args.app_security_group_ids):
            ingress(f"pg-appsg-{i}", referenced_security_group_id=sg, from_port=args.pg_port, to_port=args.pg_port,
                    description="PostgreSQL from the application's security group")
        for i, cidr in enumerate(args.app_cidrs):
            family = {"cidr_ipv6": cidr} if ":" in cidr else {"cidr_ipv4": cidr}
            ingress(f"pg-app-{i}", from_port=args.pg_port, to_port=args.pg_port,
                    description="PostgreSQL from the application's network", **family)

        # repo2 (S3) through the VPC's gateway endpoint: the managed prefix list, not 0.0.0.0/0.
        s3_list = aws.ec2.get_managed_prefix_list_output(name=f"com.amazonaws.{args.region}.s3")
        egress("https-s3", prefix_list_id=s3_list.id, ip_protocol="tcp", from_port=443, to_port=443,
               description="HTTPS to S3 (pgBackRest repo2) via the gateway endpoint prefix list")

        # directTransfer: the target opens SSH to the source and pulls the final dump (host to host, not
        # through the operator). Egress only: nothing may connect in; the source's own firewall must let
        # this host's address in on 22 (not ours to declare). Already covered when the source is the repo host.
        if args.source_cidr and args.source_cidr != repo_cidr:
            egress(
                "ssh-source",
                cidr_ipv4=args.source_cidr,
                ip_protocol="tcp",
                from_port=args.ssh_port,
                to_port=args.ssh_port,
                description="SSH to the source host: the final dump, host to host (directTransfer)",
            )

        for i, e in enumerate(args.extra_egress):
            family = {"cidr_ipv6": e.cidr} if ":" in e.cidr else {"cidr_ipv4": e.cidr}
            egress(f"extra-{i}", ip_protocol=e.protocol, from_port=e.port, to_port=e.port,
                   description=e.description or "explicitly configured egress (extraEgress)", **family)

        self.register_outputs({"security_group_id": sg_id})
