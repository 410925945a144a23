"""The host's identity: role, instance profile and exactly the permissions pgBackRest and the tasks need.

- S3: pgBackRest's repo2 for *our stanza only*. The bucket's ``pgbackrest/`` prefix also holds the
  shared host's ``tracker`` stanza (1.1 TB of history), so objects are granted under
  ``<prefix>/archive/<stanza>/`` and ``<prefix>/backup/<stanza>/`` only, never the whole prefix.
  Listing is limited by ``s3:prefix`` to the same two trees, plus the one non-recursive listing of
  ``<prefix>/backup/`` that pgBackRest's ``info`` makes to find stanza directories (names only).
- Secrets Manager: ``GetSecretValue`` on the cipher passphrase only, resolved from its *name* to an
  ARN at deploy time (a missing secret fails ``pulumi up``). The application role's password is
  fetched by the operator's tasks, never on the host, so the host cannot read it.
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
    stanza: str  # ours; never the shared host's
    secret_names: tuple[str, ...]  # what the host itself reads: the cipher passphrase
    tags: dict[str, str]


def assume_role_policy() -> str:
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    })


def stanza_prefixes(prefix: str, stanza: str) -> tuple[str, str]:
    """The two key prefixes pgBackRest writes for one stanza (its repository layout:
    ``<repo-path>/archive/<stanza>/`` and ``<repo-path>/backup/<stanza>/``)."""
    return f"{prefix}/archive/{stanza}/", f"{prefix}/backup/{stanza}/"


def s3_policy(bucket: str, prefix: str, stanza: str) -> dict:
    """Least privilege for one stanza of a shared repository path.

    pgBackRest lists with ``list-type=2``, ``prefix=<path>/`` (plus the literal head of a file
    pattern) and ``delimiter=/`` unless it recurses; multi-object delete needs ``s3:DeleteObject``
    on each key. So every list it makes for our stanza starts with one of ``stanza_prefixes``; the
    only list outside them is ``info``'s ``<prefix>/backup/`` to find stanza names.
    """
    bucket_arn = f"arn:aws:s3:::{bucket}"
    archive, backup = stanza_prefixes(prefix, stanza)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {  # `pgbackrest info` enumerates stanza directories (common prefixes only, one level)
                "Sid": "ListStanzaNames",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": bucket_arn,
                "Condition": {"StringEquals": {"s3:prefix": [f"{prefix}/backup/"], "s3:delimiter": ["/"]}},
            },
            {
                "Sid": "ListOurStanza",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": bucket_arn,
                "Condition": {"StringLike": {"s3:prefix": [f"{archive}*", f"{backup}*"]}},
            },
            {
                "Sid": "ObjectsOfOurStanza",
                "Effect": "Allow",
                "Action": [
                    "s3:GetObject",
                    "s3:GetObjectVersion",
                    "s3:PutObject",
                    "s3:PutObjectTagging",
                    "s3:DeleteObject",
                ],
                "Resource": [f"{bucket_arn}/{archive}*", f"{bucket_arn}/{backup}*"],
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
            description="tracker database host (pgBackRest repo2 for its own stanza, cipher secret, SSM)",
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
            policy=json.dumps(s3_policy(args.backup_bucket, args.backup_prefix, args.stanza)),
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
