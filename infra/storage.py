"""The PostgreSQL data volume: its own EBS volume, so the database outlives the instance.

Protected in Pulumi (``protect``) and snapshotted if it is ever deleted (``final_snapshot``). It is
created in the instance's AZ (an EBS volume can only attach there). The tasks, not Pulumi, format
and mount it: on Nitro it shows up as NVMe, found by volume id under /dev/disk/by-id.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass
class StorageArgs:
    name: str
    instance_id: pulumi.Input[str]
    availability_zone: pulumi.Input[str]
    size_gb: int
    device_name: str
    tags: dict[str, str]


class DataVolume(pulumi.ComponentResource):
    volume: aws.ebs.Volume
    attachment: aws.ec2.VolumeAttachment

    def __init__(self, name: str, args: StorageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("trackerdb:infra:DataVolume", name, None, opts)
        self.volume = aws.ebs.Volume(
            f"{name}-volume",
            availability_zone=args.availability_zone,
            size=args.size_gb,
            type="gp3",
            encrypted=True,
            final_snapshot=True,
            tags={**args.tags, "Name": f"{args.name}-pgdata"},
            opts=pulumi.ResourceOptions(parent=self, protect=True),
        )
        self.attachment = aws.ec2.VolumeAttachment(
            f"{name}-attachment",
            device_name=args.device_name,
            volume_id=self.volume.id,
            instance_id=args.instance_id,
            # Detach only with the instance stopped: never pull the disk from under a running PostgreSQL.
            stop_instance_before_detaching=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"data_volume_id": self.volume.id})
