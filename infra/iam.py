"""The host's identity: role, instance profile and exactly the permissions pgBackRest and the tasks need.

- S3: the pgBackRest repo2 policy from pgBackRest's user guide, scoped to the bucket and its
  ``pgbackrest/`` prefix (list only with prefix conditions; get/put/delete only under the prefix).
- Secrets Manager: ``GetSecretValue`` on the cipher passphrase and the tracker role's password,
  resolved from their *names* to ARNs at deploy time (a missing secret fails ``pulumi up``).
- SSM core, so operators reach the host through Session Manager instead of open SSH.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

SSM_CORE_ARN = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"


@dataclass
class IdentityArgs:
    name: str
    backup_bucket: str
    backup_prefix: str  # "pgbackrest" (no slashes)
    secret_names: tuple[str, ...]  # cipher passphrase first
    tags: dict[str, str]


def assume_role_policy() -> str:
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    })


def s3_policy(bucket: str, prefix: str) -> dict:
    """pgBackRest's documented least-privilege policy for one repository path."""
    bucket_arn = f"arn:aws:s3:::{bucket}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {   # pgBackRest lists the bucket root and the repo path itself with delimiter "/"
                "Sid": "ListRepoRoot",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": bucket_arn,
                "Condition": {"StringEquals": {"s3:prefix": ["", prefix], "s3:delimiter": ["/"]}},
            },
            {
                "Sid": "ListRepo",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": bucket_arn,
                "Condition": {"StringLike": {"s3:prefix": [f"{prefix}/*"]}},
            },
            {
                "Sid": "ObjectsInRepo",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:PutObjectTagging", "s3:DeleteObject"],
                "Resource": f"{bucket_arn}/{prefix}/*",
            },
        ],
    }


def secrets_policy(secret_arns: list[str]) -> dict:
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "ReadNamedSecrets",
            "Effect": "Allow",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": sorted(secret_arns),
        }],
    }


class DatabaseIdentity(pulumi.ComponentResource):
    role: aws.iam.Role
    instance_profile: aws.iam.InstanceProfile

    def __init__(self, name: str, args: IdentityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("trackerdb:infra:DatabaseIdentity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.role = aws.iam.Role(
            f"{name}-role",
            name=f"{args.name}-db",
            description="tracker database host (pgBackRest repo2, named secrets, SSM)",
            assume_role_policy=assume_role_policy(),
            tags=args.tags,
            opts=child,
        )
        self.instance_profile = aws.iam.InstanceProfile(
            f"{name}-profile", name=f"{args.name}-db", role=self.role.name, tags=args.tags, opts=child
        )
        aws.iam.RolePolicy(
            f"{name}-s3",
            name="pgbackrest-repo2-s3",
            role=self.role.id,
            policy=json.dumps(s3_policy(args.backup_bucket, args.backup_prefix)),
            opts=child,
        )
        arns = [aws.secretsmanager.get_secret_output(name=n).arn for n in args.secret_names]
        aws.iam.RolePolicy(
            f"{name}-secrets",
            name="read-named-secrets",
            role=self.role.id,
            policy=pulumi.Output.all(*arns).apply(lambda a: json.dumps(secrets_policy(list(a)))),
            opts=child,
        )
        aws.iam.RolePolicyAttachment(f"{name}-ssm", role=self.role.name, policy_arn=SSM_CORE_ARN, opts=child)
        self.register_outputs({"role_name": self.role.name, "instance_profile_name": self.instance_profile.name})
