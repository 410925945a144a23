"""The pure half of infra.check: facts in, checks out (tables, no AWS)."""

from __future__ import annotations

import copy

import pytest

from infra.iam import s3_policy, secrets_policy
from tests.conftest import prod_outputs
from trackerdb.errors import ConfigError
from trackerdb.infra_check import (SSM_CORE_ARN, Expected, Rule, check_iam, check_instance, check_security_group,
                                   check_volumes, parse_extra_egress, policy_findings, rules_from_permissions)

O = prod_outputs()
EXP = Expected(outputs=O)
PL = "pl-s3"
CIPHER_ARN = "arn:aws:secretsmanager:eu-west-2:1:secret:tracker/pgbackrest/cipher-pass-AbC"
APP_ARN = "arn:aws:secretsmanager:eu-west-2:1:secret:tracker/db/tracker-password-DeF"
SECRETS = {O["cipher_secret_name"]: CIPHER_ARN, O["app_secret_name"]: APP_ARN}

GOOD_INSTANCE = {
    "id": O["instance_id"], "state": "running", "type": "t3.medium", "private_ip": O["private_ip"], "public_ip": None,
    "az": O["availability_zone"], "metadata": {"http_tokens": "required", "hop_limit": 1},
    "profile_arn": f"arn:aws:iam::1:instance-profile/{O['instance_profile_name']}",
    "security_group_ids": [O["security_group_id"]], "root_volume_id": "vol-root",
}
GOOD_RULES = {
    Rule("ingress", "tcp", 22, 22, "cidr", "172.31.203.209/32"),
    Rule("egress", "tcp", 22, 22, "cidr", "172.31.203.209/32"),
    Rule("ingress", "tcp", 5432, 5432, "cidr", "172.31.32.0/20"),
    Rule("egress", "tcp", 443, 443, "prefix-list", PL),
}


def failing(checks):
    return {c.name for c in checks if not c.ok}


@pytest.mark.parametrize("change, expected", [
    ({}, set()),
    ({"public_ip": "3.8.1.1"}, {"instance has no public IP"}),
    ({"metadata": {"http_tokens": "optional", "hop_limit": 1}}, {"IMDSv2 required"}),
    ({"metadata": {"http_tokens": "required", "hop_limit": 2}}, {"IMDS hop limit"}),
    ({"type": "t3.large"}, {"instance type"}),
    ({"security_group_ids": [O["security_group_id"], "sg-default"]}, {"instance security groups"}),
    ({"profile_arn": "arn:aws:iam::1:instance-profile/admin"}, {"instance profile"}),
    ({"state": "stopped"}, {"instance running"}),
])
def test_instance_checks(change, expected):
    assert failing(check_instance({"instance": GOOD_INSTANCE | change}, EXP)) == expected


def test_instance_missing_is_one_failure():
    assert failing(check_instance({"instance_error": "error: InvalidInstanceID.NotFound"}, EXP)) == {"instance exists"}


def _vol(size, **over):
    return {"size": size, "type": "gp3", "encrypted": True, "az": O["availability_zone"],
            "attachments": [{"instance_id": O["instance_id"], "device": "/dev/sdf", "state": "attached"}]} | over


@pytest.mark.parametrize("root, data, outputs, expected", [
    (_vol(25), _vol(50), {}, set()),
    (_vol(25, type="gp2"), _vol(50), {}, {"root volume type"}),
    (_vol(25), _vol(50, az="eu-west-2c"), {}, {"data volume availability zone"}),
    (_vol(25), _vol(50, attachments=[]), {}, {"data volume attached"}),
    (_vol(30), _vol(50), {"root_volume_size_gb": 30}, {"stack root size matches runbook"}),
    (_vol(25), None, {}, {"data volume exists"}),
])
def test_volume_checks(root, data, outputs, expected):
    o = O | outputs
    vols = {"vol-root": root} | ({o["data_volume_id"]: data} if data else {})
    assert failing(check_volumes({"instance": GOOD_INSTANCE, "volumes": vols}, Expected(outputs=o))) == expected


def test_rules_from_permissions_flattens_every_peer_kind():
    perms = [
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}], "Ipv6Ranges": [{"CidrIpv6": "::/0"}]},
        {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "UserIdGroupPairs": [{"GroupId": "sg-app"}],
         "PrefixListIds": [{"PrefixListId": PL}]},
    ]
    assert rules_from_permissions(perms, "ingress") == {
        Rule("ingress", "-1", None, None, "cidr", "0.0.0.0/0"), Rule("ingress", "-1", None, None, "cidr", "::/0"),
        Rule("ingress", "tcp", 5432, 5432, "sg", "sg-app"), Rule("ingress", "tcp", 5432, 5432, "prefix-list", PL),
    }


@pytest.mark.parametrize("extra_rules, drop, exp, expected", [
    (set(), set(), EXP, set()),
    ({Rule("ingress", "tcp", 22, 22, "cidr", "172.31.0.0/16")}, set(), EXP, {"sg rule: ingress tcp 22 from 172.31.0.0/16"}),
    ({Rule("ingress", "tcp", 5432, 5432, "sg", "sg-app")}, set(), EXP, {"sg rule: ingress tcp 5432 from sg-app"}),
    ({Rule("ingress", "tcp", 5432, 5432, "sg", "sg-app")}, set(), Expected(O, app_security_group_ids=("sg-app",)), set()),
    ({Rule("egress", "tcp", 443, 443, "cidr", "10.9.0.0/16")}, set(), Expected(O, extra_egress=parse_extra_egress("10.9.0.0/16:443")), set()),
    ({Rule("egress", "tcp", 443, 443, "cidr", "0.0.0.0/0")}, set(), EXP, {"sg rule: egress tcp 443 to 0.0.0.0/0"}),
    (set(), {Rule("egress", "tcp", 443, 443, "prefix-list", PL)}, EXP, {"sg rule: egress tcp 443 to pl-s3"}),
])
def test_security_group_rules(extra_rules, drop, exp, expected):
    facts = {"sg_rules": (GOOD_RULES | extra_rules) - drop, "s3_prefix_list_id": PL}
    assert failing(check_security_group(facts, exp)) == expected


def test_direct_transfer_rule_is_expected_when_the_stack_says_so():
    direct = Expected(prod_outputs(direct_transfer=True, source_cidr="172.31.7.8/32"))
    to_source = Rule("egress", "tcp", 22, 22, "cidr", "172.31.7.8/32")
    assert failing(check_security_group({"sg_rules": GOOD_RULES, "s3_prefix_list_id": PL}, direct)) == {
        "sg rule: egress tcp 22 to 172.31.7.8/32"}
    assert failing(check_security_group({"sg_rules": GOOD_RULES | {to_source}, "s3_prefix_list_id": PL}, direct)) == set()
    # deployed without the switch in the stack: the extra rule is found
    assert failing(check_security_group({"sg_rules": GOOD_RULES | {to_source}, "s3_prefix_list_id": PL}, EXP)) == {
        "sg rule: egress tcp 22 to 172.31.7.8/32"}


def test_parse_extra_egress():
    assert parse_extra_egress("10.0.0.0/16:443, 10.1.0.0/16:53/udp") == (("tcp", 443, "10.0.0.0/16"), ("udp", 53, "10.1.0.0/16"))
    with pytest.raises(ConfigError, match="CIDR:PORT"):
        parse_extra_egress("10.0.0.0/16")


GOOD_STATEMENTS = s3_policy(O["backup_bucket"], "pgbackrest", O["stanza"])["Statement"] + secrets_policy([CIPHER_ARN])["Statement"]
B = "arn:aws:s3:::glimpse-timescale-backups"
BROADER = {"role policies no broader than declared"}


@pytest.mark.parametrize("mutate, expected", [
    (lambda st: st, set()),
    (lambda st: st + [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}], {"role policies no broader than declared"}),
    (lambda st: st + [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::glimpse-timescale-backups/*"}],
     {"role policies no broader than declared"}),
    (lambda st: st + [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::glimpse-timescale-backups"}],
     {"role policies no broader than declared"}),
    (lambda st: st + [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}],
     {"role policies no broader than declared"}),
    (lambda st: st + [{"Effect": "Allow", "Action": "iam:PassRole", "Resource": "arn:aws:iam::1:role/x"}],
     {"role policies no broader than declared"}),
    (lambda st: st + [{"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}], {"role policies no broader than declared"}),
    (lambda st: st[:2] + st[3:], {"role may read/write its stanza's objects"}),
    # the whole repo2 prefix (what the issue found): it holds the shared stanza too
    (lambda st: st + [{"Effect": "Allow", "Action": "s3:DeleteObject", "Resource": f"{B}/pgbackrest/*"}], BROADER),
    (lambda st: st + [{"Effect": "Allow", "Action": "s3:DeleteObject", "Resource": f"{B}/pgbackrest/backup/tracker/*"}], BROADER),
    (lambda st: st + [{"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"{B}/pgbackrest/archive/tracker-dedicated*"}], BROADER),
    (lambda st: st + [{"Effect": "Allow", "Action": "s3:Delete*", "Resource": f"{B}/pgbackrest/archive/tracker-dedicated/*"}], BROADER),
    (lambda st: st + [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": B,
                       "Condition": {"StringLike": {"s3:prefix": ["pgbackrest/*"]}}}], BROADER),
    (lambda st: st + [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": B,
                       "Condition": {"StringLike": {"s3:prefix": ["pgbackrest/backup/"]}}}], BROADER),  # recursive
    (lambda st: st + [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": B,
                       "Condition": {"StringNotEquals": {"s3:prefix": ["pgbackrest/backup/tracker/"]}}}], BROADER),
    (lambda st: st + [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": [APP_ARN]}], BROADER),
    (lambda st: st[1:], {"role may list its stanza"}),
    (lambda st: st[:3], {"role may read the cipher secret"}),
    (lambda st: st + [{"Effect": "Deny", "Action": "*", "Resource": "*"}], set()),
])
def test_policy_findings(mutate, expected):
    statements = mutate(copy.deepcopy(GOOD_STATEMENTS))
    assert failing(policy_findings(statements, EXP, SECRETS)) == expected


def test_iam_checks_flag_extra_managed_policy_and_wrong_principal():
    iam = {"profile_roles": [O["role_name"]], "attached_policies": [SSM_CORE_ARN],
           "assume_policy": {"Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}}]},
           "inline_policies": {"p": {"Statement": GOOD_STATEMENTS}}}
    assert failing(check_iam({"iam": iam, "secret_arns": SECRETS}, EXP)) == set()
    bad = iam | {"attached_policies": [SSM_CORE_ARN, "arn:aws:iam::aws:policy/AdministratorAccess"],
                 "assume_policy": {"Statement": [{"Principal": {"AWS": "*"}}]}}
    assert failing(check_iam({"iam": bad, "secret_arns": SECRETS}, EXP)) == {"role managed policies", "role assumable by EC2 only"}
