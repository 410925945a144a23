"""`infra.check` under moto: a deployment built like the Pulumi program passes; each fault is caught by name.

The correct deployment uses the program's own policy builders (infra/iam.py), so the program and
the check cannot drift apart silently. moto 5 loads AWS managed policies only when asked
(``load_aws_managed_policies``), which attaching AmazonSSMManagedInstanceCore needs.
"""

from __future__ import annotations

import json

import boto3
import pytest
from invoke import Config, Context, Exit
from moto import mock_aws

from infra.iam import assume_role_policy, s3_policy, secrets_policy
from tests.conftest import prod_outputs
from trackerdb import infra_check
from trackerdb.cli import infra as infra_cli
from trackerdb.settings import Settings

REGION = "eu-west-2"
AMI = "ami-12c6146b"  # one of moto's built-in images (describe_images would cost seconds per test)
MOTO_CONFIG = {"iam": {"load_aws_managed_policies": True}}


@pytest.fixture(scope="module")
def aws():
    """One moto backend for the module (building it, with managed policies, costs seconds); each test
    deploys its own uniquely named resources into it. Bucket and secrets are shared, as in production."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
                     "AWS_DEFAULT_REGION": REGION}.items():
            mp.setenv(k, v)
        for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "TRACKERDB_ENV", "TRACKERDB_SETTINGS", "TRACKERDB_STACK_OUTPUTS"):
            mp.delenv(k, raising=False)
        with mock_aws(config=MOTO_CONFIG):
            base = prod_outputs()
            boto3.client("s3", region_name=REGION).create_bucket(
                Bucket=base["backup_bucket"], CreateBucketConfiguration={"LocationConstraint": REGION})
            sm = boto3.client("secretsmanager", region_name=REGION)
            arns = [sm.create_secret(Name=n, SecretString="not-a-real-secret")["ARN"]
                    for n in (base["cipher_secret_name"], base["app_secret_name"])]
            yield arns


_seq = iter(range(1000))


# The S3 policy the issue found deployed: get/put/delete on the whole repo2 prefix, which also holds
# the shared host's `tracker` stanza.
WIDE_S3 = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::glimpse-timescale-backups",
     "Condition": {"StringEquals": {"s3:prefix": ["", "pgbackrest"], "s3:delimiter": ["/"]}}},
    {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::glimpse-timescale-backups",
     "Condition": {"StringLike": {"s3:prefix": ["pgbackrest/*"]}}},
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:PutObjectTagging", "s3:DeleteObject"],
     "Resource": "arn:aws:s3:::glimpse-timescale-backups/pgbackrest/*"},
]}


def deploy(arns, data_size=50, data_encrypted=True, ssh_world=False, imds_tokens="required", extra_policy=None,
           wildcard_inline=False, keep_default_egress=False, wide_s3=False, app_secret_readable=False) -> dict:
    """Build the stack's resources in moto (as `pulumi up` would) and return its stack outputs."""
    ec2, iam = boto3.client("ec2", region_name=REGION), boto3.client("iam", region_name=REGION)
    base = prod_outputs()
    name = f"tracker-timescale-db-{next(_seq)}"

    iam.create_role(RoleName=name, AssumeRolePolicyDocument=assume_role_policy())
    iam.create_instance_profile(InstanceProfileName=name)
    iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    s3_doc = WIDE_S3 if wide_s3 else s3_policy(base["backup_bucket"], "pgbackrest", base["stanza"])
    iam.put_role_policy(RoleName=name, PolicyName="pgbackrest-repo2-s3", PolicyDocument=json.dumps(s3_doc))
    iam.put_role_policy(RoleName=name, PolicyName="read-named-secrets",
                        PolicyDocument=json.dumps(secrets_policy(arns if app_secret_readable else arns[:1])))
    iam.attach_role_policy(RoleName=name, PolicyArn=infra_check.SSM_CORE_ARN)
    if extra_policy:
        iam.attach_role_policy(RoleName=name, PolicyArn=extra_policy)
    if wildcard_inline:
        iam.put_role_policy(RoleName=name, PolicyName="debug", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))

    vpc = ec2.create_vpc(CidrBlock="172.31.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="172.31.10.0/24", AvailabilityZone="eu-west-2b")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName=name, Description="db", VpcId=vpc)["GroupId"]
    if not keep_default_egress:  # the provider removes AWS's default allow-all egress
        ec2.revoke_security_group_egress(GroupId=sg, IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    pl = ec2.describe_managed_prefix_lists(Filters=[{"Name": "prefix-list-name", "Values": [f"com.amazonaws.{REGION}.s3"]}])
    pl_id = pl["PrefixLists"][0]["PrefixListId"]
    repo = f"{base['repo_host_ip']}/32"
    ingress = [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": repo}]},
               {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "IpRanges": [{"CidrIp": c} for c in base["app_cidrs"]]}]
    if ssh_world:
        ingress.append({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]})
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=ingress)
    ec2.authorize_security_group_egress(GroupId=sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": repo}]},
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "PrefixListIds": [{"PrefixListId": pl_id}]},
    ])

    inst = ec2.run_instances(
        ImageId=AMI, MinCount=1, MaxCount=1, InstanceType="t3.medium", SubnetId=subnet,
        SecurityGroupIds=[sg], IamInstanceProfile={"Name": name},
        MetadataOptions={"HttpTokens": imds_tokens, "HttpPutResponseHopLimit": 1, "HttpEndpoint": "enabled"},
        BlockDeviceMappings=[{"DeviceName": "/dev/sda1",  # moto's images' root device
                              "Ebs": {"VolumeSize": 25, "VolumeType": "gp3", "Encrypted": True}}],
    )["Instances"][0]
    az = inst["Placement"]["AvailabilityZone"]
    vol = ec2.create_volume(AvailabilityZone=az, Size=data_size, VolumeType="gp3", Encrypted=data_encrypted)["VolumeId"]
    ec2.attach_volume(VolumeId=vol, InstanceId=inst["InstanceId"], Device="/dev/sdf")
    return prod_outputs(instance_id=inst["InstanceId"], private_ip=inst["PrivateIpAddress"], availability_zone=az,
                        data_volume_id=vol, security_group_id=sg, role_name=name, instance_profile_name=name)


_clients: dict = {}


def cached_client(settings, service):
    # a fresh boto3 session per client re-parses the service model (~0.5 s each); the task itself
    # (tests below) goes through trackerdb.aws.client unchanged
    if service not in _clients:
        _clients[service] = boto3.client(service, region_name=settings.region)
    return _clients[service]


def run_checks(outputs: dict) -> list:
    s = Settings.from_parts({}, outputs)
    return infra_check.evaluate(infra_check.gather(s, make_client=cached_client), infra_check.Expected(outputs=outputs))


def failing(checks) -> set[str]:
    return {c.name for c in checks if not c.ok}


def test_correct_deployment_passes_every_check(aws):
    checks = run_checks(deploy(aws))
    assert failing(checks) == set(), [c for c in checks if not c.ok]
    names = {c.name for c in checks}
    # the checks cover every noun the issue lists
    for needed in ("instance type", "IMDSv2 required", "root volume encrypted", "data volume size", "data volume attached",
                   "instance profile", "role managed policies", "sg rule: ingress tcp 22 from 172.31.203.209/32",
                   "backup bucket reachable", "secret tracker/pgbackrest/cipher-pass exists"):
        assert needed in names


@pytest.mark.parametrize("fault, expected_failures", [
    ({"data_size": 40}, {"data volume size"}),
    ({"data_encrypted": False}, {"data volume encrypted"}),
    ({"ssh_world": True}, {"sg rule: ingress tcp 22 from 0.0.0.0/0"}),
    ({"imds_tokens": "optional"}, {"IMDSv2 required"}),
    ({"keep_default_egress": True}, {"sg rule: egress all traffic all ports to 0.0.0.0/0"}),
    ({"extra_policy": "arn:aws:iam::aws:policy/AdministratorAccess"}, {"role managed policies"}),
    ({"wildcard_inline": True}, {"role policies no broader than declared"}),
    # the whole repo2 prefix: the shared stanza's history could be deleted
    ({"wide_s3": True}, {"role policies no broader than declared"}),
    ({"app_secret_readable": True}, {"role policies no broader than declared"}),
])
def test_each_fault_is_detected_by_name(aws, fault, expected_failures):
    checks = run_checks(deploy(aws, **fault))
    assert failing(checks) == expected_failures


def test_wide_s3_names_the_shared_prefix(aws):
    checks = run_checks(deploy(aws, wide_s3=True))
    [c] = [c for c in checks if c.name == "role policies no broader than declared"]
    assert "arn:aws:s3:::glimpse-timescale-backups/pgbackrest/*" in c.observed
    assert "'pgbackrest/*'" in c.observed and "beyond stanza tracker-dedicated" in c.observed


def test_world_open_ssh_says_why(aws):
    checks = run_checks(deploy(aws, ssh_world=True))
    [c] = [c for c in checks if not c.ok]
    assert "open to the world" in c.observed and c.evidence == "broader than declared"


def test_missing_instance_and_volume_are_failures_not_crashes(aws):
    outputs = deploy(aws)
    outputs.update(instance_id="i-0000000000000dead", data_volume_id="vol-0000000000000dead")
    checks = run_checks(outputs)
    assert {"instance exists", "data volume exists"} <= failing(checks)


def _ctx(tmp_path, monkeypatch, outputs) -> Context:
    path = tmp_path / "stack-outputs.json"
    path.write_text(json.dumps(outputs))
    monkeypatch.setenv("TRACKERDB_STACK_OUTPUTS", str(path))
    return Context(Config(overrides={"trackerdb": {}}))


def test_task_json_ok_and_exit_zero(aws, tmp_path, monkeypatch, capsys):
    infra_cli.check(_ctx(tmp_path, monkeypatch, deploy(aws)), json=True)
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and all(c["status"] == "ok" for c in report["checks"])


def test_task_exits_non_zero_on_mismatch(aws, tmp_path, monkeypatch, capsys):
    with pytest.raises(Exit) as e:
        infra_cli.check(_ctx(tmp_path, monkeypatch, deploy(aws, imds_tokens="optional")))
    assert e.value.code == 1
    out = capsys.readouterr()
    assert "IMDSv2 required" in out.out and "1 infrastructure check(s) failed" in out.err
