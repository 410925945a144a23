"""The dedicated EC2 instance (runbook "Target State"; DESIGN §2 "Host")."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass
class HostArgs:
    name: str
    instance_type: str
    ami_owner: str
    ami_name_filter: str
    subnet_id: pulumi.Input[str]
    security_group_id: pulumi.Input[str]
    instance_profile_name: pulumi.Input[str]
    root_volume_size_gb: int
    tags: dict[str, str]


class DatabaseHost(pulumi.ComponentResource):
    instance: aws.ec2.Instance

    def __init__(self, name: str, args: HostArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("trackerdb:infra:DatabaseHost", name, None, opts)
        ami = aws.ec2.get_ami_output(
            owners=[args.ami_owner],
            most_recent=True,
            filters=[
                {"name": "name", "values": [args.ami_name_filter]},
                {"name": "architecture", "values": ["x86_64"]},  # t3 is x86_64
                {"name": "virtualization-type", "values": ["hvm"]},
            ],
        )
        self.instance = aws.ec2.Instance(
            f"{name}-instance",
            ami=ami.id,
            instance_type=args.instance_type,
            subnet_id=args.subnet_id,
            vpc_security_group_ids=[args.security_group_id],
            associate_public_ip_address=False,
            iam_instance_profile=args.instance_profile_name,
            # IMDSv2 only; hop limit 1 keeps the role's credentials away from anything one hop further.
            metadata_options={"http_endpoint": "enabled", "http_tokens": "required", "http_put_response_hop_limit": 1},
            root_block_device={
                "volume_size": args.root_volume_size_gb,
                "volume_type": "gp3",
                "encrypted": True,
                "delete_on_termination": True,
                "tags": {**args.tags, "Name": f"{args.name}-root"},
            },
            tags=args.tags,
            # A newer image must never replace the database host: the AMI is looked up once.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["ami"]),
        )
        self.register_outputs({"instance_id": self.instance.id, "private_ip": self.instance.private_ip})
