"""`infra.check`: read the deployed host's AWS resources and compare them with the stack outputs and the runbook.

Two halves, pyinfra-style:
- ``gather(settings)`` reads facts with boto3 into one plain dict (no judgement);
- ``evaluate(facts, expected)`` and the ``check_*`` functions are pure: facts in, ``Check`` list out.
  Anything deployed that is broader than declared (an extra rule, an extra policy, a wildcard) fails.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import ConfigError, HostError
from .iam_eval import Request, allowed
from .steps import Check

if TYPE_CHECKING:
    from .settings import Settings

SSM_CORE_ARN = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"

#: what the runbook fixes, independent of what the stack happened to export
RUNBOOK = {"instance_type": "t3.medium", "root_volume_size_gb": 25, "data_volume_size_gb": 50, "volume_type": "gp3"}


# ---- expected ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """One security-group permission, normalised: ports are None for "all"."""

    direction: str  # ingress | egress
    protocol: str  # tcp | udp | -1 (all)
    from_port: int | None
    to_port: int | None
    kind: str  # cidr | sg | prefix-list
    peer: str

    def describe(self) -> str:
        ports = "all ports" if self.from_port in (None, -1) else (
            str(self.from_port) if self.from_port == self.to_port else f"{self.from_port}-{self.to_port}")
        proto = "all traffic" if self.protocol == "-1" else self.protocol
        way = "from" if self.direction == "ingress" else "to"
        return f"{self.direction} {proto} {ports} {way} {self.peer}"

    @property
    def world_open(self) -> bool:
        if self.kind != "cidr":
            return False
        return ipaddress.ip_network(self.peer, strict=False).prefixlen == 0


@dataclass(frozen=True)
class Expected:
    outputs: dict
    app_security_group_ids: tuple[str, ...] = ()
    extra_egress: tuple[tuple[str, int, str], ...] = ()  # (protocol, port, cidr), as configured in the stack
    runbook: dict = field(default_factory=lambda: dict(RUNBOOK))

    @property
    def backup_prefix(self) -> str:
        return self.outputs["backup_path"].strip("/")

    def rules(self, s3_prefix_list_id: str | None) -> set[Rule]:
        o = self.outputs
        repo = f"{o['repo_host_ip']}/32"
        rules = {
            Rule("ingress", "tcp", 22, 22, "cidr", repo),
            Rule("egress", "tcp", 22, 22, "cidr", repo),
            Rule("egress", "tcp", 443, 443, "prefix-list", s3_prefix_list_id or "<S3 prefix list not found>"),
        }
        rules |= {Rule("ingress", "tcp", 5432, 5432, "cidr", str(ipaddress.ip_network(c))) for c in o["app_cidrs"]}
        rules |= {Rule("ingress", "tcp", 5432, 5432, "sg", sg) for sg in self.app_security_group_ids}
        rules |= {
            Rule("egress", p, port, port, "cidr", str(ipaddress.ip_network(c))) for p, port, c in self.extra_egress
        }
        if o.get("direct_transfer") and o.get("source_cidr"):  # the target pulls the final dump from the source
            rules.add(Rule("egress", "tcp", 22, 22, "cidr", str(ipaddress.ip_network(o["source_cidr"]))))
        return rules


def parse_extra_egress(text: str) -> tuple[tuple[str, int, str], ...]:
    """``10.0.0.0/16:443,10.1.0.0/16:53/udp`` -> ((tcp, 443, 10.0.0.0/16), (udp, 53, 10.1.0.0/16))."""
    out = []
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        try:
            cidr, rest = item.rsplit(":", 1)
            port, _, proto = rest.partition("/")
            out.append((proto or "tcp", int(port), str(ipaddress.ip_network(cidr))))
        except ValueError:
            raise ConfigError(
                f"--extra-egress entry {item!r} is not CIDR:PORT[/udp]", hint="e.g. 10.0.0.0/16:443"
            ) from None
    return tuple(out)


# ---- pure checks ---------------------------------------------------------------------------

def _c(name: str, ok: object, observed, expected, evidence: str = "") -> Check:
    return Check(name, bool(ok), str(observed), str(expected), evidence)


def check_instance(facts: dict, exp: Expected) -> list[Check]:
    o = exp.outputs
    inst = facts.get("instance")
    if not inst:
        return [_c("instance exists", False, facts.get("instance_error", "not found"), o["instance_id"])]
    md = inst.get("metadata") or {}
    profile_arn = inst.get("profile_arn") or ""
    return [
        _c("instance exists", True, f"{inst['id']} ({inst['state']})", o["instance_id"]),
        _c("instance running", inst["state"] == "running", inst["state"], "running"),
        _c(
            "instance type",
            inst["type"] == exp.runbook["instance_type"],
            inst["type"],
            exp.runbook["instance_type"],
            "runbook: staging's type",
        ),
        _c("instance private IP", inst["private_ip"] == o["private_ip"], inst["private_ip"], o["private_ip"]),
        _c("instance availability zone", inst["az"] == o["availability_zone"], inst["az"], o["availability_zone"]),
        _c("instance has no public IP", not inst.get("public_ip"), inst.get("public_ip") or "none", "none"),
        _c("IMDSv2 required", md.get("http_tokens") == "required", md.get("http_tokens"), "required"),
        _c("IMDS hop limit", md.get("hop_limit") == 1, md.get("hop_limit"), 1),
        _c(
            "instance profile",
            profile_arn.endswith("/" + o["instance_profile_name"]),
            profile_arn or "none",
            f".../instance-profile/{o['instance_profile_name']}",
        ),
        _c(
            "instance security groups",
            sorted(inst.get("security_group_ids", [])) == [o["security_group_id"]],
            ",".join(sorted(inst.get("security_group_ids", []))),
            o["security_group_id"],
            "any other group would add rules",
        ),
    ]


def _volume_checks(label: str, vol: dict | None, size: int, inst: dict) -> list[Check]:
    if not vol:
        return [_c(f"{label} volume exists", False, "not found", "attached")]
    att = [a for a in vol.get("attachments", []) if a.get("instance_id") == inst.get("id")]
    attached = bool(att) and att[0].get("state") == "attached"
    return [
        _c(f"{label} volume size", vol["size"] == size, f"{vol['size']} GB", f"{size} GB"),
        _c(f"{label} volume type", vol["type"] == RUNBOOK["volume_type"], vol["type"], RUNBOOK["volume_type"]),
        _c(f"{label} volume encrypted", vol["encrypted"] is True, vol["encrypted"], True),
        _c(
            f"{label} volume attached",
            attached,
            ",".join(f"{a.get('instance_id')}:{a.get('state')}" for a in vol.get("attachments", [])) or "detached",
            f"{inst.get('id')}:attached",
        ),
        _c(f"{label} volume availability zone", vol["az"] == inst.get("az"), vol["az"], inst.get("az")),
    ]


def check_volumes(facts: dict, exp: Expected) -> list[Check]:
    o, inst = exp.outputs, facts.get("instance") or {}
    vols = facts.get("volumes", {})
    checks = [
        _c("stack root size matches runbook", int(o["root_volume_size_gb"]) == exp.runbook["root_volume_size_gb"],
           o["root_volume_size_gb"], exp.runbook["root_volume_size_gb"]),
        _c("stack data size matches runbook", int(o["data_volume_size_gb"]) == exp.runbook["data_volume_size_gb"],
           o["data_volume_size_gb"], exp.runbook["data_volume_size_gb"]),
    ]
    checks += _volume_checks("root", vols.get(inst.get("root_volume_id") or ""), int(o["root_volume_size_gb"]), inst)
    checks += _volume_checks("data", vols.get(o["data_volume_id"]), int(o["data_volume_size_gb"]), inst)
    return checks


def check_security_group(facts: dict, exp: Expected) -> list[Check]:
    observed = set(facts.get("sg_rules") or [])
    declared = exp.rules(facts.get("s3_prefix_list_id"))
    checks = [_c(f"sg rule: {r.describe()}", r in observed, "present" if r in observed else "missing", "present")
              for r in sorted(declared, key=Rule.describe)]
    for r in sorted(observed - declared, key=Rule.describe):
        why = "open to the world" if r.world_open else "not declared by the stack"
        checks.append(_c(f"sg rule: {r.describe()}", False, f"present ({why})", "absent", "broader than declared"))
    if facts.get("sg_error"):
        checks.append(_c("security group readable", False, facts["sg_error"], exp.outputs["security_group_id"]))
    return checks


def _as_list(v) -> list:
    return v if isinstance(v, list) else [v]


def _list_findings(st: dict, bucket_arn: str, exp: Expected) -> list[str]:
    """What in this ListBucket statement reaches beyond our stanza (empty: nothing).

    Allowed: prefixes inside our stanza's two trees (any operator: the stanza prefix ends in "/",
    so a wildcard after it cannot reach a sibling stanza), and ``<prefix>/backup/`` only as a
    StringEquals with ``s3:delimiter = /`` (one level: stanza names, which ``pgbackrest info`` lists).
    Anything else, a negated operator or no s3:prefix at all can list the shared stanza's files.
    """
    ours = stanza_prefixes(exp)
    names_prefix = f"{exp.backup_prefix}/backup/"
    problems: list[str] = []
    resources = _as_list(st.get("Resource", []))
    if resources != [bucket_arn]:
        problems.append(f"s3:ListBucket on {resources}")
    cond = st.get("Condition") or {}
    prefixes_seen = False
    for op, kv in cond.items():
        if "s3:prefix" not in kv:
            continue
        prefixes_seen = True
        if op not in ("StringEquals", "StringLike"):
            problems.append(f"s3:ListBucket with {op} on s3:prefix")
            continue
        one_level = op == "StringEquals" and _as_list(kv.get("s3:delimiter", [])) == ["/"]
        for prefix in _as_list(kv["s3:prefix"]):
            if not (any(prefix.startswith(o) for o in ours) or (prefix == names_prefix and one_level)):
                problems.append(
                    f"s3:ListBucket with s3:prefix {prefix!r} ({op}) reaches beyond stanza {exp.outputs['stanza']}"
                )
    if not prefixes_seen:
        problems.append(f"s3:ListBucket on {resources} without an s3:prefix condition")
    return problems


def stanza_prefixes(exp: Expected) -> tuple[str, str]:
    """Where pgBackRest keeps our stanza under repo2's path (its repository layout)."""
    return (
        f"{exp.backup_prefix}/archive/{exp.outputs['stanza']}/",
        f"{exp.backup_prefix}/backup/{exp.outputs['stanza']}/",
    )


def policy_findings(statements: list[dict], exp: Expected, secret_arns: dict[str, str]) -> list[Check]:
    """Judge every Allow statement of the role's inline policies against what the stack declares.

    The bucket's repo2 path is shared with the old host's stanza: object rights anywhere but under
    our stanza's ``archive/`` and ``backup/`` trees could delete its history, so they fail here.
    """
    bucket = exp.outputs["backup_bucket"]
    bucket_arn = f"arn:aws:s3:::{bucket}"
    ours = stanza_prefixes(exp)
    object_arns = [f"{bucket_arn}/{p}*" for p in ours]
    cipher_arn = secret_arns.get(exp.outputs["cipher_secret_name"])
    granted_secrets: set[str] = set()
    problems: list[str] = []
    for st in statements:
        if st.get("Effect") != "Allow":
            continue
        actions, resources = _as_list(st.get("Action", [])), _as_list(st.get("Resource", []))
        if "NotAction" in st or "NotResource" in st:
            problems.append("NotAction/NotResource statement")
            continue
        for a in actions:
            al = a.lower()
            if "*" in al or "?" in al:
                problems.append(f"wildcard action {a}")
            elif al == "s3:listbucket":
                problems += _list_findings(st, bucket_arn, exp)
            elif al.startswith("s3:"):
                extra = [r for r in resources if r not in object_arns]
                if extra:
                    problems.append(f"{a} on {extra}")
            elif al == "secretsmanager:getsecretvalue":
                # the host reads only the cipher passphrase; the app password is the operator's
                extra = [r for r in resources if r != cipher_arn]
                if extra:
                    problems.append(f"{a} on {extra}")
                granted_secrets |= set(resources) & {cipher_arn}
            else:
                problems.append(f"undeclared action {a} on {resources}")
    # What the role can actually do (not how it is spelled): the requests pgBackRest makes for our stanza.
    can_list = all(allowed(statements, Request("s3:ListBucket", bucket_arn, {"s3:prefix": p, "s3:delimiter": "/"}))
                   for p in (*ours, f"{exp.backup_prefix}/backup/"))
    rw = {f"{p}*": [a for a in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject")
                    if allowed(statements, Request(a, f"{bucket_arn}/{p}probe"))] for p in ours}
    return [
        _c(
            "role policies no broader than declared",
            not problems,
            "; ".join(problems) or "scoped",
            f"stanza {exp.outputs['stanza']}'s S3 prefixes + the cipher secret only",
        ),
        _c(
            "role may list its stanza",
            can_list,
            "yes" if can_list else "no",
            f"s3:ListBucket on {bucket_arn} with s3:prefix {ours[0]}, {ours[1]} "
            f"and {exp.backup_prefix}/backup/ (delimiter /)",
        ),
        _c(
            "role may read/write its stanza's objects",
            all(len(v) == 3 for v in rw.values()),
            "; ".join(f"{k}: {','.join(v) or 'none'}" for k, v in rw.items()),
            f"get/put/delete on {', '.join(object_arns)}",
        ),
        _c(
            "role may read the cipher secret",
            bool(cipher_arn) and cipher_arn in granted_secrets,
            "granted" if cipher_arn in granted_secrets else "not granted",
            f"GetSecretValue on {exp.outputs['cipher_secret_name']}",
        ),
    ]


def check_iam(facts: dict, exp: Expected) -> list[Check]:
    o = exp.outputs
    iam = facts.get("iam") or {}
    if iam.get("error"):
        return [_c("IAM readable", False, iam["error"], o["role_name"])]
    principals = [s.get("Principal") for s in (iam.get("assume_policy") or {}).get("Statement", [])]
    statements = [
        st for doc in (iam.get("inline_policies") or {}).values() for st in _as_list(doc.get("Statement", []))
    ]
    attached = sorted(iam.get("attached_policies") or [])
    return [
        _c(
            "instance profile role",
            iam.get("profile_roles") == [o["role_name"]],
            ",".join(iam.get("profile_roles") or []) or "none",
            o["role_name"],
        ),
        _c(
            "role assumable by EC2 only",
            principals == [{"Service": "ec2.amazonaws.com"}],
            principals,
            "ec2.amazonaws.com",
        ),
        _c(
            "role managed policies",
            attached == [SSM_CORE_ARN],
            ",".join(attached) or "none",
            SSM_CORE_ARN,
            "SSM Session Manager instead of open SSH; anything else is broader than declared",
        ),
        *policy_findings(statements, exp, facts.get("secret_arns") or {}),
    ]


def check_reachable(facts: dict, exp: Expected) -> list[Check]:
    o = exp.outputs
    bucket = facts.get("bucket") or {}
    checks = [_c("backup bucket reachable", bucket.get("ok"), bucket.get("detail", "not checked"), o["backup_bucket"])]
    for key in ("cipher_secret_name", "app_secret_name"):
        s = (facts.get("secrets") or {}).get(o[key]) or {}
        checks.append(
            _c(f"secret {o[key]} exists", s.get("ok"), s.get("detail", "not checked"), "described (value not read)")
        )
    return checks


def evaluate(facts: dict, exp: Expected) -> list[Check]:
    return [*check_instance(facts, exp), *check_volumes(facts, exp), *check_security_group(facts, exp),
            *check_iam(facts, exp), *check_reachable(facts, exp)]


# ---- facts (boto3) -------------------------------------------------------------------------

def rules_from_permissions(perms: list[dict], direction: str) -> set[Rule]:
    """Flatten describe_security_groups' IpPermissions(Egress) into one Rule per peer."""
    out: set[Rule] = set()
    for p in perms:
        proto = str(p.get("IpProtocol", "-1"))
        lo, hi = (None, None) if proto == "-1" else (p.get("FromPort"), p.get("ToPort"))
        for r in p.get("IpRanges", []):
            out.add(Rule(direction, proto, lo, hi, "cidr", r["CidrIp"]))
        for r in p.get("Ipv6Ranges", []):
            out.add(Rule(direction, proto, lo, hi, "cidr", r["CidrIpv6"]))
        for r in p.get("UserIdGroupPairs", []):
            out.add(Rule(direction, proto, lo, hi, "sg", r["GroupId"]))
        for r in p.get("PrefixListIds", []):
            out.add(Rule(direction, proto, lo, hi, "prefix-list", r["PrefixListId"]))
    return out


def _err(exc: Exception) -> str:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None
    return f"error: {code or type(exc).__name__}"


def _volume_facts(v: dict) -> dict:
    """What the checks read of one ``describe_volumes`` entry."""
    return {
        "size": v["Size"],
        "type": v["VolumeType"],
        "encrypted": v["Encrypted"],
        "az": v["AvailabilityZone"],
        "attachments": [
            {"instance_id": a["InstanceId"], "device": a["Device"], "state": a["State"]}
            for a in v.get("Attachments", [])
        ],
    }


def gather(settings: Settings, outputs: dict | None = None, make_client=None) -> dict:
    """Read every fact the checks need. Reads only: nothing here changes AWS.

    ``make_client(settings, service)`` defaults to ``trackerdb.aws.client``.
    """
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    from .aws import client

    o = outputs or settings.outputs
    make_client = make_client or client
    ec2, iam, s3, sm = (make_client(settings, s) for s in ("ec2", "iam", "s3", "secretsmanager"))
    facts: dict = {"volumes": {}}
    try:
        res = ec2.describe_instances(InstanceIds=[o["instance_id"]])["Reservations"]
    except NoCredentialsError:
        raise HostError(
            "no AWS credentials found", hint="configure the default chain (AWS_PROFILE, aws sso login)"
        ) from None
    except (ClientError, BotoCoreError) as exc:
        res, facts["instance_error"] = [], _err(exc)
    if res and res[0]["Instances"]:
        i = res[0]["Instances"][0]
        md = i.get("MetadataOptions", {})
        root = [
            b["Ebs"]["VolumeId"] for b in i.get("BlockDeviceMappings", []) if b["DeviceName"] == i.get("RootDeviceName")
        ]
        facts["instance"] = {
            "id": i["InstanceId"], "state": i["State"]["Name"], "type": i["InstanceType"],
            "private_ip": i.get("PrivateIpAddress"), "public_ip": i.get("PublicIpAddress"),
            "az": i["Placement"]["AvailabilityZone"],
            "metadata": {"http_tokens": md.get("HttpTokens"), "hop_limit": md.get("HttpPutResponseHopLimit"),
                         "endpoint": md.get("HttpEndpoint")},
            "profile_arn": (i.get("IamInstanceProfile") or {}).get("Arn"),
            "security_group_ids": [g["GroupId"] for g in i.get("SecurityGroups", [])],
            "root_volume_id": root[0] if root else None,
        }
        vol_ids = [b["Ebs"]["VolumeId"] for b in i.get("BlockDeviceMappings", [])]
    else:
        vol_ids = []
    vol_ids = sorted(set(vol_ids) | {o["data_volume_id"]})
    try:
        for v in ec2.describe_volumes(VolumeIds=vol_ids)["Volumes"]:
            facts["volumes"][v["VolumeId"]] = _volume_facts(v)
    except ClientError as exc:  # one missing id fails the whole call: read them one by one
        for vid in vol_ids:
            try:
                v = ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]
            except ClientError:
                continue
            facts["volumes"][vid] = _volume_facts(v)
        facts["volumes_error"] = _err(exc)
    try:
        sg = ec2.describe_security_groups(GroupIds=[o["security_group_id"]])["SecurityGroups"][0]
        facts["sg_rules"] = rules_from_permissions(sg.get("IpPermissions", []), "ingress") | rules_from_permissions(
            sg.get("IpPermissionsEgress", []), "egress")
    except ClientError as exc:
        facts["sg_rules"], facts["sg_error"] = set(), _err(exc)
    try:
        pls = ec2.describe_managed_prefix_lists(
            Filters=[{"Name": "prefix-list-name", "Values": [f"com.amazonaws.{settings.region}.s3"]}]
        )
        facts["s3_prefix_list_id"] = next((p["PrefixListId"] for p in pls["PrefixLists"]), None)
    except ClientError:
        facts["s3_prefix_list_id"] = None
    facts["iam"] = _gather_iam(iam, o)
    facts["secrets"], facts["secret_arns"] = {}, {}
    for name in (o["cipher_secret_name"], o["app_secret_name"]):
        try:
            arn = sm.describe_secret(SecretId=name)["ARN"]
            facts["secrets"][name] = {"ok": True, "detail": arn}
            facts["secret_arns"][name] = arn
        except ClientError as exc:
            facts["secrets"][name] = {"ok": False, "detail": _err(exc)}
    try:
        s3.head_bucket(Bucket=o["backup_bucket"])
        facts["bucket"] = {"ok": True, "detail": "head_bucket ok"}
    except ClientError as exc:
        facts["bucket"] = {"ok": False, "detail": _err(exc)}
    return facts


def _gather_iam(iam, o: dict) -> dict:
    from botocore.exceptions import ClientError

    try:
        profile = iam.get_instance_profile(InstanceProfileName=o["instance_profile_name"])["InstanceProfile"]
        role = iam.get_role(RoleName=o["role_name"])["Role"]
        names = iam.list_role_policies(RoleName=o["role_name"])["PolicyNames"]
        inline = {n: iam.get_role_policy(RoleName=o["role_name"], PolicyName=n)["PolicyDocument"] for n in names}
        attached = [
            p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=o["role_name"])["AttachedPolicies"]
        ]
    except ClientError as exc:
        return {"error": _err(exc)}
    return {
        "profile_roles": [r["RoleName"] for r in profile.get("Roles", [])],
        "assume_policy": role.get("AssumeRolePolicyDocument") or {},
        "inline_policies": inline,
        "attached_policies": attached,
    }
