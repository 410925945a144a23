"""The Pulumi program under mocks, with the prod stack's own config: policies on the declared resources.

Each test runs ``infra/__main__.py`` in a fresh mock runtime (new monitor, new root stack, config
from Pulumi.prod.yaml + test values for the keys the runbook doesn't give). A recording monitor keeps
each registration request, so resource options the engine would see (protect, ignore_changes,
parent) are asserted too, not just inputs.
"""

from __future__ import annotations

import ipaddress
import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import pytest
import yaml
from pulumi.runtime import mocks as pmocks
from pulumi.runtime import settings as psettings

from trackerdb.inventory import OUTPUT_KEYS

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "infra" / "__main__.py"
P = "tracker-timescale-host"

# Values the runbook does not give: set per test, like an operator would with `pulumi config set`.
UNKNOWN = {
    f"{P}:vpcId": "vpc-0a1b2c3d",
    f"{P}:subnetId": "subnet-0a1b2c3d",
    f"{P}:appCidrs": ["172.31.32.0/20"],
}

MOCK_AZ = "eu-west-2b"   # what the provider would compute for the instance from its subnet
S3_PL = "pl-7ca54015"


@dataclass
class Registered:
    typ: str
    name: str
    inputs: dict
    protect: bool
    ignore_changes: list
    parent: str
    state: dict = field(default_factory=dict)


class Mocks(pulumi.runtime.Mocks):
    def __init__(self):
        self.calls: list[tuple[str, dict]] = []

    def new_resource(self, args):
        state = dict(args.inputs)
        if args.typ == "aws:ec2/instance:Instance":
            state.update(privateIp="172.31.10.20", availabilityZone=MOCK_AZ)
        if args.typ in ("aws:iam/role:Role", "aws:iam/instanceProfile:InstanceProfile"):
            state.setdefault("arn", f"arn:aws:iam::123456789012:role/{state.get('name')}")
        return f"{args.name}-id", state

    def call(self, args):
        self.calls.append((args.token, dict(args.args)))
        if args.token == "aws:ec2/getAmi:getAmi":
            return {"id": "ami-0debian12", "name": "debian-12-amd64-20250101-1", "architecture": "x86_64"}
        if args.token == "aws:ec2/getManagedPrefixList:getManagedPrefixList":
            return {"id": S3_PL, "name": args.args.get("name")}
        if args.token == "aws:secretsmanager/getSecret:getSecret":
            n = args.args["name"]
            return {"arn": f"arn:aws:secretsmanager:eu-west-2:123456789012:secret:{n}-AbCdEf", "name": n}
        return {}


class RecordingMonitor(pmocks.MockMonitor):
    def __init__(self, m):
        super().__init__(m)
        self.registered: list[Registered] = []

    def RegisterResource(self, request):
        resp = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            urn = self.make_urn(request.parent, request.type, request.name)
            state = self.resources[urn].state if urn in self.resources else {}
            inputs = pulumi.runtime.rpc.deserialize_properties(request.object) if request.custom else {}
            self.registered.append(Registered(request.type, request.name, inputs, request.protect,
                                              list(request.ignoreChanges), request.parent, state))
        return resp


def prod_config() -> dict:
    raw = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())["config"]
    return dict(raw)


@dataclass
class Run:
    resources: list[Registered]
    outputs: dict
    calls: list

    def of(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str) -> Registered:
        found = self.of(typ)
        assert len(found) == 1, f"{typ}: {len(found)} declared"
        return found[0]


LAST_MONITOR: list[RecordingMonitor] = []


def run_program(overrides: dict | None = None, drop: tuple[str, ...] = ()) -> Run:
    cfg = prod_config() | UNKNOWN | (overrides or {})
    for k in drop:
        cfg.pop(k, None)
    # Pulumi hands every value to the program as a string (objects and lists as JSON).
    pulumi.runtime.set_all_config({k: v if isinstance(v, str) else json.dumps(v) for k, v in cfg.items()})
    psettings.ROOT.set(None)  # a fresh root stack per run
    m = Mocks()
    monitor = RecordingMonitor(m)
    LAST_MONITOR[:] = [monitor]
    pulumi.runtime.set_mocks(m, project=P, stack="prod", preview=False, monitor=monitor)
    outputs: dict = {}

    @pulumi.runtime.test
    def program():
        runpy.run_path(str(MAIN), run_name="__main__")
        stack = psettings.get_root_resource()
        return pulumi.Output.from_input(dict(stack.outputs)).apply(outputs.update)

    program()
    return Run(monitor.registered, outputs, m.calls)


@pytest.fixture(scope="module")
def prod() -> Run:
    return run_program()


# ---- exports --------------------------------------------------------------------------------

def test_exports_are_exactly_the_inventory_shape(prod):
    assert set(prod.outputs) == set(OUTPUT_KEYS)


def test_exports_carry_the_runbook_values(prod):
    o = prod.outputs
    assert o["region"] == "eu-west-2"
    assert (o["root_volume_size_gb"], o["data_volume_size_gb"]) == (25, 50)
    assert o["repo_host_ip"] == "172.31.203.209" and o["repo_host_name"] == "pg-backrest.timescale.glimpse.internal"
    assert (o["backup_bucket"], o["backup_path"]) == ("glimpse-timescale-backups", "/pgbackrest")
    assert o["cipher_secret_name"] == "tracker/pgbackrest/cipher-pass" and not o["cipher_secret_name"].startswith("arn:")
    assert (o["stanza"], o["shared_stanza"]) == ("tracker-dedicated", "tracker")
    assert (o["postgres_major"], o["postgis_version"], o["timescaledb_version"]) == (16, "3.5.2", "2.18.2")
    assert o["postgres_version"] == "16.10"  # exactly the source's minor (a string, never the float 16.1)
    assert o["repo_path"] == "/var/pg_backrest_data/repo3" and o["repo_host_user"] == "postgres"
    assert o["data_mount"] == "/var/lib/postgresql"
    # computed by the provider, not from config: the instance's AZ and the data volume's id
    assert o["availability_zone"] == MOCK_AZ
    data = prod.one("aws:ebs/volume:Volume")
    assert o["data_volume_id"] == f"{data.name}-id"


# ---- the instance -------------------------------------------------------------------------

def test_instance_type_ami_lookup_and_ignore_changes(prod):
    inst = prod.one("aws:ec2/instance:Instance")
    assert inst.inputs["instanceType"] == "t3.medium"
    assert inst.inputs["ami"] == "ami-0debian12"
    assert "ami" in inst.ignore_changes
    ami_calls = [a for t, a in prod.calls if t == "aws:ec2/getAmi:getAmi"]
    assert len(ami_calls) == 1
    assert ami_calls[0]["owners"] == ["136693071363"] and ami_calls[0]["mostRecent"] is True
    filters = {f["name"]: f["values"] for f in ami_calls[0]["filters"]}
    assert filters["name"] == ["debian-12-amd64-*"] and filters["architecture"] == ["x86_64"]


def test_instance_imdsv2_hop_limit_one(prod):
    md = prod.one("aws:ec2/instance:Instance").inputs["metadataOptions"]
    assert md["httpTokens"] == "required"
    assert md["httpPutResponseHopLimit"] == 1


def test_root_volume_25gb_gp3_encrypted(prod):
    root = prod.one("aws:ec2/instance:Instance").inputs["rootBlockDevice"]
    assert (root["volumeSize"], root["volumeType"], root["encrypted"]) == (25, "gp3", True)


def test_instance_private_in_subnet_with_profile_and_only_its_sg(prod):
    inst = prod.one("aws:ec2/instance:Instance").inputs
    sg = prod.one("aws:ec2/securityGroup:SecurityGroup")
    profile = prod.one("aws:iam/instanceProfile:InstanceProfile")
    assert inst["subnetId"] == "subnet-0a1b2c3d"
    assert inst["associatePublicIpAddress"] is False
    assert inst["vpcSecurityGroupIds"] == [f"{sg.name}-id"]
    assert inst["iamInstanceProfile"] == profile.inputs["name"]


def test_every_taggable_resource_is_tagged(prod):
    for r in prod.resources:
        if not r.typ.startswith("aws:") or r.typ in ("aws:ec2/volumeAttachment:VolumeAttachment",
                                                     "aws:iam/rolePolicy:RolePolicy",
                                                     "aws:iam/rolePolicyAttachment:RolePolicyAttachment"):
            continue
        tags = r.inputs.get("tags") or {}
        assert tags.get("Project") == P and tags.get("Environment") == "prod" and tags.get("Name"), r.name


def test_every_resource_is_parented_to_a_component(prod):
    for r in prod.resources:
        if r.typ.startswith("aws:"):
            assert "trackerdb:infra:" in r.parent, f"{r.typ} {r.name} has no component parent"


# ---- the data volume ----------------------------------------------------------------------

def test_data_volume_50gb_gp3_encrypted_protected_same_az(prod):
    vol = prod.one("aws:ebs/volume:Volume")
    assert (vol.inputs["size"], vol.inputs["type"], vol.inputs["encrypted"]) == (50, "gp3", True)
    assert vol.inputs["finalSnapshot"] is True
    assert vol.protect is True
    assert vol.inputs["availabilityZone"] == MOCK_AZ  # the instance's computed AZ, not a configured guess


def test_data_volume_attached_to_the_instance(prod):
    att = prod.one("aws:ec2/volumeAttachment:VolumeAttachment").inputs
    inst = prod.one("aws:ec2/instance:Instance")
    vol = prod.one("aws:ebs/volume:Volume")
    assert att["deviceName"] == "/dev/sdf"
    assert att["instanceId"] == f"{inst.name}-id" and att["volumeId"] == f"{vol.name}-id"


# ---- the security group -------------------------------------------------------------------

def _rules(run: Run):
    ins = [r.inputs for r in run.of("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")]
    outs = [r.inputs for r in run.of("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")]
    return ins, outs


def test_security_group_has_no_inline_rules(prod):
    sg = prod.one("aws:ec2/securityGroup:SecurityGroup").inputs
    assert not sg.get("ingress") and not sg.get("egress")
    assert sg["vpcId"] == "vpc-0a1b2c3d"


def test_no_ingress_from_the_world_and_every_rule_is_one_port(prod):
    ins, outs = _rules(prod)
    for r in ins:
        for key in ("cidrIpv4", "cidrIpv6"):
            if r.get(key):
                assert ipaddress.ip_network(r[key]).prefixlen > 0
    for r in ins + outs:
        assert r["ipProtocol"] in ("tcp", "udp") and r["fromPort"] == r["toPort"], r


def test_ssh_only_with_the_repository_host(prod):
    ins, outs = _rules(prod)
    ssh_in = [r for r in ins if r["fromPort"] == 22]
    ssh_out = [r for r in outs if r["fromPort"] == 22]
    assert [r.get("cidrIpv4") for r in ssh_in] == ["172.31.203.209/32"]
    assert [r.get("cidrIpv4") for r in ssh_out] == ["172.31.203.209/32"]


def test_postgres_only_from_the_app(prod):
    ins, _ = _rules(prod)
    pg = [r for r in ins if r["fromPort"] == 5432]
    assert [r.get("cidrIpv4") for r in pg] == ["172.31.32.0/20"]
    assert {r["fromPort"] for r in ins} == {22, 5432}


def test_app_security_groups_become_referenced_rules():
    run = run_program({f"{P}:appSecurityGroupIds": ["sg-0app1", "sg-0app2"]})
    ins, _ = _rules(run)
    refs = sorted(r["referencedSecurityGroupId"] for r in ins if r.get("referencedSecurityGroupId"))
    assert refs == ["sg-0app1", "sg-0app2"]
    assert all(r["fromPort"] == 5432 for r in ins if r.get("referencedSecurityGroupId"))


def test_egress_is_ssh_to_repo_and_https_to_the_s3_prefix_list_only(prod):
    _, outs = _rules(prod)
    https = [r for r in outs if r["fromPort"] == 443]
    assert len(https) == 1 and https[0]["prefixListId"] == S3_PL and not https[0].get("cidrIpv4")
    assert {r["fromPort"] for r in outs} == {22, 443}
    pl_calls = [a for t, a in prod.calls if t == "aws:ec2/getManagedPrefixList:getManagedPrefixList"]
    assert pl_calls == [{"name": "com.amazonaws.eu-west-2.s3"}]


def test_extra_egress_only_when_configured():
    run = run_program({f"{P}:extraEgress": [{"cidr": "10.20.0.0/16", "port": 443, "description": "SSM endpoints"}]})
    _, outs = _rules(run)
    extra = [r for r in outs if r.get("cidrIpv4") == "10.20.0.0/16"]
    assert len(extra) == 1 and extra[0]["fromPort"] == 443 and extra[0]["ipProtocol"] == "tcp"


# ---- IAM ----------------------------------------------------------------------------------

def _policy(run: Run, name: str) -> dict:
    [p] = [r for r in run.of("aws:iam/rolePolicy:RolePolicy") if r.inputs["name"] == name]
    return json.loads(p.inputs["policy"])


def test_role_is_assumable_by_ec2_only(prod):
    doc = json.loads(prod.one("aws:iam/role:Role").inputs["assumeRolePolicy"])
    assert [s["Principal"] for s in doc["Statement"]] == [{"Service": "ec2.amazonaws.com"}]


def test_instance_profile_wraps_the_role(prod):
    assert prod.one("aws:iam/instanceProfile:InstanceProfile").inputs["role"] == prod.one("aws:iam/role:Role").inputs["name"]


def test_s3_objects_only_under_our_stanza(prod):
    """The repo2 prefix also holds the shared host's `tracker` stanza: no object right may reach it."""
    from trackerdb.iam_eval import allowed, s3_request

    doc = _policy(prod, "pgbackrest-repo2-s3")
    objects = [st for st in doc["Statement"] if st["Action"] != "s3:ListBucket"]
    resources = sorted(r for st in objects for r in (st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]))
    assert resources == ["arn:aws:s3:::glimpse-timescale-backups/pgbackrest/archive/tracker-dedicated/*",
                         "arn:aws:s3:::glimpse-timescale-backups/pgbackrest/backup/tracker-dedicated/*"]
    for st in doc["Statement"]:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        assert st["Resource"] != "*" and all("*" not in a for a in actions)
    bucket = "glimpse-timescale-backups"
    for key in ("pgbackrest/backup/tracker/backup.info", "pgbackrest/archive/tracker/archive.info", "pgbackrest/x"):
        assert not allowed(doc["Statement"], s3_request("DELETE", bucket, key)), key
        assert not allowed(doc["Statement"], s3_request("PUT", bucket, key)), key
    assert allowed(doc["Statement"], s3_request("DELETE", bucket, "pgbackrest/backup/tracker-dedicated/latest"))


def test_s3_list_only_our_stanza_and_stanza_names(prod):
    from trackerdb.iam_eval import allowed, s3_request

    st = _policy(prod, "pgbackrest-repo2-s3")["Statement"]
    b = "glimpse-timescale-backups"
    assert allowed(st, s3_request("GET", b, "?delimiter=%2F&list-type=2&prefix=pgbackrest%2Farchive%2Ftracker-dedicated%2F17-1%2F"))
    assert allowed(st, s3_request("GET", b, "?delimiter=%2F&list-type=2&prefix=pgbackrest%2Fbackup%2F"))  # `info`
    assert not allowed(st, s3_request("GET", b, "?delimiter=%2F&list-type=2&prefix=pgbackrest%2Fbackup%2Ftracker%2F"))
    assert not allowed(st, s3_request("GET", b, "?list-type=2&prefix=pgbackrest%2F"))


def test_secrets_policy_is_get_value_on_the_cipher_secret_only(prod):
    """The app role's password is fetched by the operator's tasks; nothing on the host reads it."""
    doc = _policy(prod, "read-named-secrets")
    [st] = doc["Statement"]
    assert st["Action"] == "secretsmanager:GetSecretValue"
    asked = sorted(a["name"] for t, a in prod.calls if t == "aws:secretsmanager/getSecret:getSecret")
    assert asked == ["tracker/pgbackrest/cipher-pass"]
    assert len(st["Resource"]) == 1 and ":secret:tracker/pgbackrest/cipher-pass-" in st["Resource"][0]
    assert not any("tracker-password" in r for r in st["Resource"])


def test_ssm_managed_instance_core_attached(prod):
    [att] = prod.of("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    assert att.inputs["policyArn"] == "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"


# ---- config errors ------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["vpcId", "subnetId", "appCidrs", "amiOwner", "amiNameFilter", "cipherSecretName",
                                 "postgresVersion"])
def test_missing_required_key_fails_with_one_line_naming_it(key):
    with pytest.raises(pulumi.RunError) as err:
        run_program(drop=(f"{P}:{key}",))
    msg = str(err.value)
    assert f"missing required config key {P}:{key}" in msg and "\n" not in msg


def test_missing_region_names_the_aws_key():
    with pytest.raises(pulumi.RunError, match="missing required config key aws:region"):
        run_program(drop=("aws:region",))


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0", "0.0.0.0/1", "2000::/3", "2001::/16"])
def test_world_open_app_cidr_is_rejected(cidr):
    with pytest.raises(pulumi.RunError) as err:
        run_program({f"{P}:appCidrs": ["10.0.0.0/24", cidr]})
    msg = str(err.value)
    assert f"appCidrs entry {cidr} would open PostgreSQL 5432 to the world" in msg and "\n" not in msg


@pytest.mark.parametrize("over,needle", [
    ({f"{P}:appCidrs": ["10.0.0.1/24"]}, "is not a network"),
    ({f"{P}:stanza": "tracker"}, "equals sharedStanza"),
    ({f"{P}:repoHostIp": "pg-backrest"}, "is not an IPv4 address"),
    ({f"{P}:extraEgress": [{"cidr": "0.0.0.0/0", "port": 443, "protocol": "-1"}]}, "no all-traffic rules"),
    ({f"{P}:extraEgress": [{"cidr": "10.0.0.0/8"}]}, "needs cidr and port"),
    ({f"{P}:appSecurityGroupIds": ["app-sg"]}, "is not a security group id"),
    ({f"{P}:stanza": "tracker*"}, "may hold only letters"),
    ({f"{P}:stanza": "../tracker"}, "may hold only letters"),
    ({f"{P}:rootVolumeSizeGb": "big"}, "must be an integer"),
    ({f"{P}:postgresVersion": "17.12"}, "postgresVersion must be 16.<minor>"),
    ({f"{P}:postgresVersion": "16"}, "postgresVersion must be 16.<minor>"),
    ({f"{P}:postgresVersion": "16.1O"}, "postgresVersion must be 16.<minor>"),
])
def test_bad_config_is_rejected(over, needle):
    with pytest.raises(pulumi.RunError, match=needle):
        run_program(over)


def test_ipv6_app_network_of_a_site_is_accepted():
    run = run_program({f"{P}:appCidrs": ["2001:db8:10::/48"]})
    ins, _ = _rules(run)
    assert [r.get("cidrIpv6") for r in ins if r["fromPort"] == 5432] == ["2001:db8:10::/48"]


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0", "0.0.0.0/4", "2000::/3", "2600::/12"])
def test_world_wide_extra_egress_is_rejected(cidr):
    with pytest.raises(pulumi.RunError) as err:
        run_program({f"{P}:extraEgress": [{"cidr": cidr, "port": 443}]})
    msg = str(err.value)
    assert f"extraEgress[0]: cidr {cidr} is too wide" in msg and "\n" not in msg


def test_no_resource_declared_when_config_is_rejected():
    with pytest.raises(pulumi.RunError):
        run_program({f"{P}:appCidrs": ["0.0.0.0/0"]})
    # config is read before any resource: nothing half-declared reaches the engine
    assert [r for r in LAST_MONITOR[0].registered if r.typ.startswith("aws:")] == []


# ---- directTransfer: the target pulls the final dump from the source --------------------------

def test_direct_transfer_off_by_default_declares_no_source_rule(prod):
    _, outs = _rules(prod)
    assert [r.get("cidrIpv4") for r in outs if r["fromPort"] == 22] == ["172.31.203.209/32"]
    assert prod.outputs["direct_transfer"] is False and prod.outputs["source_cidr"] == ""


def test_direct_transfer_adds_exactly_one_egress_ssh_rule_to_the_source():
    run = run_program({f"{P}:directTransfer": "true", f"{P}:sourceCidr": "172.31.7.8/32"})
    ins, outs = _rules(run)
    to_source = [r for r in outs if r.get("cidrIpv4") == "172.31.7.8/32"]
    assert len(to_source) == 1 and to_source[0]["fromPort"] == to_source[0]["toPort"] == 22
    assert to_source[0]["ipProtocol"] == "tcp"
    assert not [r for r in ins if r.get("cidrIpv4") == "172.31.7.8/32"]  # egress only: nothing new may connect in
    assert run.outputs["direct_transfer"] is True and run.outputs["source_cidr"] == "172.31.7.8/32"


def test_direct_transfer_to_the_repository_host_needs_no_second_rule():
    run = run_program({f"{P}:directTransfer": "true", f"{P}:sourceCidr": "172.31.203.209/32"})
    _, outs = _rules(run)
    assert [r.get("cidrIpv4") for r in outs if r["fromPort"] == 22] == ["172.31.203.209/32"]


@pytest.mark.parametrize("over, needle", [
    ({f"{P}:directTransfer": "true"}, "missing required config key tracker-timescale-host:sourceCidr"),
    ({f"{P}:directTransfer": "true", f"{P}:sourceCidr": "0.0.0.0/0"}, "too wide for SSH to one host"),
    ({f"{P}:directTransfer": "true", f"{P}:sourceCidr": "172.31.0.0/16"}, "too wide for SSH to one host"),
    ({f"{P}:directTransfer": "true", f"{P}:sourceCidr": "2001:db8::1/128"}, "too wide for SSH to one host"),
    ({f"{P}:directTransfer": "yes"}, "directTransfer must be true or false"),
    ({f"{P}:sourceCidr": "172.31.7.8/32"}, "sourceCidr is set but directTransfer is not true"),
])
def test_bad_direct_transfer_config_is_rejected(over, needle):
    with pytest.raises(pulumi.RunError) as err:
        run_program(over)
    assert needle in str(err.value) and "\n" not in str(err.value)
