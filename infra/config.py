"""The stack's configuration, read and validated in one place.

Every production value the runbook gives lives in ``Pulumi.prod.yaml``. Values nobody has given us
(VPC, subnet, the application's networks, the AMI choice) are explicit keys too: a missing one
stops ``pulumi up`` with one line naming the key. Nothing here falls back to a silent default.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

import pulumi

# The value rules the tasks apply again to the stack outputs (trackerdb.settings.Settings.validate):
# written once, in a pure standard-library module. infra imports trackerdb.inventory and this, nothing
# else of trackerdb (docs/architecture.md); a duplicated rule would drift, an import of a pure module cannot.
from trackerdb import inputs
from trackerdb.inputs import TOO_WIDE, too_wide

PROJECT = "tracker-timescale-host"


class ConfigError(pulumi.RunError):
    """A config problem. ``RunError`` makes ``pulumi up`` print just the message, not a traceback."""


@dataclass(frozen=True)
class Egress:
    """One explicitly configured extra egress rule (package mirror, SSM endpoints, ...)."""

    cidr: str
    port: int
    protocol: str = "tcp"
    description: str = ""


@dataclass(frozen=True)
class StackConfig:
    environment: str
    region: str
    name: str  # prefix of every resource name and the Name tag
    tags: dict[str, str]
    # network (not in the runbook: required keys)
    vpc_id: str
    subnet_id: str
    app_cidrs: tuple[str, ...]
    app_security_group_ids: tuple[str, ...]
    extra_egress: tuple[Egress, ...]
    # host
    instance_type: str
    ami_owner: str
    ami_name_filter: str
    root_volume_size_gb: int
    data_volume_size_gb: int
    data_volume_device: str
    data_mount: str
    # pgBackRest
    repo_host_name: str
    repo_host_ip: str
    repo_host_user: str
    repo_path: str
    backup_bucket: str
    backup_path: str
    cipher_secret_name: str
    app_secret_name: str
    stanza: str
    shared_stanza: str
    # versions
    postgres_major: int
    postgres_version: str  # exact minor, the source's (16.10): provisioning pins it
    postgis_version: str
    timescaledb_version: str
    ssh_port: int = field(default=22)
    # host-to-host dump transfer (issue 15): the target pulls the final dump from the source over SSH
    direct_transfer: bool = False
    source_cidr: str = ""

    @property
    def backup_prefix(self) -> str:
        """The S3 key prefix of repo2 (``/pgbackrest`` -> ``pgbackrest``)."""
        return self.backup_path.strip("/")


def _req(cfg: pulumi.Config, key: str, getter: str = "get", hint: str = "") -> Any:
    value = getattr(cfg, getter)(key)
    if value is None or value == "" or value == []:
        extra = f" ({hint})" if hint else ""
        raise ConfigError(
            f"missing required config key {cfg.name}:{key}{extra}; set it with `pulumi config set {key} <value>` "
            f"(see Pulumi.prod.yaml)"
        )
    return value


def _int(cfg: pulumi.Config, key: str) -> int:
    raw = _req(cfg, key)
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"config key {cfg.name}:{key} must be an integer, got {raw!r}") from None


def _network(key: str, value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(str(value), strict=True)
    except ValueError:
        raise ConfigError(f"config key {key}: {value!r} is not a network in CIDR notation (like 10.0.1.0/24)") from None


def _rule(key: str, value, rule) -> str:
    """``value`` if ``rule`` (trackerdb.inputs) accepts it, else a one-line ConfigError naming the key."""
    problem = rule(value)
    if problem is not None:
        raise ConfigError(f"config key {PROJECT}:{key} {value!r} {problem}")
    return value


def _app_cidrs(values: list) -> tuple[str, ...]:
    out = []
    for v in values:
        net = _network(f"{PROJECT}:appCidrs", v)
        # 0.0.0.0/0, ::/0 and near-equivalents would open PostgreSQL to every network.
        if too_wide(net):
            raise ConfigError(
                f"config key {PROJECT}:appCidrs entry {v} would open PostgreSQL 5432 to the world; "
                f"list only the application's networks (IPv4 /{TOO_WIDE[4]} or longer, IPv6 /{TOO_WIDE[6]} or longer)"
            )
        out.append(str(net))
    return tuple(out)


def _extra_egress(values: list) -> tuple[Egress, ...]:
    out = []
    for i, item in enumerate(values or []):
        key = f"{PROJECT}:extraEgress[{i}]"
        if not isinstance(item, dict) or "cidr" not in item or "port" not in item:
            raise ConfigError(f"config key {key} needs cidr and port (e.g. {{cidr: 10.0.0.0/16, port: 443}})")
        proto = str(item.get("protocol", "tcp"))
        if proto not in ("tcp", "udp"):
            raise ConfigError(f"config key {key}: protocol {proto!r} is not tcp or udp (no all-traffic rules)")
        try:
            port = int(item["port"])
        except (TypeError, ValueError):
            raise ConfigError(f"config key {key}: port {item['port']!r} is not a port number") from None
        if not 0 < port < 65536:
            raise ConfigError(f"config key {key}: port {port} is out of range")
        net = _network(key, item["cidr"])
        if too_wide(net):
            raise ConfigError(
                f"config key {key}: cidr {net} is too wide (the world or close to it); egress is exactly "
                f"the repository host, S3 and what you name: give the one network it is for "
                f"(IPv4 /{TOO_WIDE[4]} or longer, IPv6 /{TOO_WIDE[6]} or longer)"
            )
        out.append(Egress(cidr=str(net), port=port, protocol=proto, description=str(item.get("description", ""))))
    return tuple(out)


def _bool(cfg: pulumi.Config, key: str) -> bool:
    raw = cfg.get(key)
    if raw is None or raw == "":
        return False
    if str(raw).lower() in ("true", "false"):
        return str(raw).lower() == "true"
    raise ConfigError(f"config key {PROJECT}:{key} must be true or false, got {raw!r}")


def _direct_transfer(cfg: pulumi.Config) -> tuple[bool, str]:
    """``directTransfer`` + ``sourceCidr``: the target's egress SSH rule to the source (the target pulls
    the final dump from the source host to host). The source is one host: an IPv4 network of /24 or
    longer; 0.0.0.0/0 and anything wide is refused."""
    on = _bool(cfg, "directTransfer")
    raw = cfg.get("sourceCidr")
    if not on:
        if raw:
            raise ConfigError(f"config key {PROJECT}:sourceCidr is set but directTransfer is not true; "
                              f"set directTransfer true to open SSH to the source, or remove sourceCidr")
        return False, ""
    if not raw:
        raise ConfigError(f"missing required config key {PROJECT}:sourceCidr (directTransfer is true: the source "
                          f"host's private address as a /32, e.g. `pulumi config set sourceCidr 172.31.5.6/32`)")
    net = _network(f"{PROJECT}:sourceCidr", raw)
    _rule("sourceCidr", str(net), inputs.source_network)
    return True, str(net)


def load() -> StackConfig:
    """Read the stack's config; raise ``ConfigError`` (one line, names the key) on anything missing or unsafe."""
    cfg = pulumi.Config(PROJECT)
    aws_cfg = pulumi.Config("aws")
    region = _req(aws_cfg, "region")
    major = _int(cfg, "postgresMajor")
    postgres_version = str(_req(cfg, "postgresVersion", hint="the source's exact PostgreSQL version, e.g. 16.10"))
    if not re.fullmatch(rf"{major}\.\d+", postgres_version):
        raise ConfigError(f"config key {cfg.name}:postgresVersion must be {major}.<minor> (postgresMajor is {major}), "
                          f"got {postgres_version!r}")
    repo_ip = _rule("repoHostIp", str(_req(cfg, "repoHostIp")), inputs.ipv4)
    app_sgs = tuple(cfg.get_object("appSecurityGroupIds") or ())
    for sg in app_sgs:
        if not str(sg).startswith("sg-"):
            raise ConfigError(
                f"config key {PROJECT}:appSecurityGroupIds entry {sg!r} is not a security group id (sg-...)"
            )
    stanza = str(_req(cfg, "stanza"))
    shared = str(_req(cfg, "sharedStanza"))
    for key, value in (("stanza", stanza), ("sharedStanza", shared)):
        _rule(key, value, inputs.stanza)
    if stanza == shared:
        raise ConfigError(
            f"config key {PROJECT}:stanza {stanza!r} equals sharedStanza; the new cluster needs its own stanza"
        )
    backup_path = _rule("backupPath", str(_req(cfg, "backupPath")), inputs.abs_path)
    tags = {str(k): str(v) for k, v in (cfg.get_object("tags") or {}).items()}
    direct, source_cidr = _direct_transfer(cfg)
    name = str(_req(cfg, "name"))
    environment = cfg.get("environment") or pulumi.get_stack()
    return StackConfig(
        environment=environment,
        region=str(region),
        name=name,
        tags={"Name": name, "Project": PROJECT, "Environment": environment, "ManagedBy": "pulumi", **tags},
        vpc_id=str(_req(cfg, "vpcId", hint="the VPC of the new database host")),
        subnet_id=str(
            _req(
                cfg, "subnetId", hint="a private subnet with a route to the repository host and the S3 gateway endpoint"
            )
        ),
        app_cidrs=_app_cidrs(
            _req(
                cfg, "appCidrs", "get_object", hint="the application's networks; pg_hba and the security group use them"
            )
        ),
        app_security_group_ids=app_sgs,
        extra_egress=_extra_egress(cfg.get_object("extraEgress") or []),
        instance_type=str(_req(cfg, "instanceType")),
        ami_owner=str(_req(cfg, "amiOwner", hint="AWS account of the image publisher; Debian is 136693071363")),
        ami_name_filter=str(_req(cfg, "amiNameFilter", hint="e.g. debian-12-amd64-*")),
        root_volume_size_gb=_int(cfg, "rootVolumeSizeGb"),
        data_volume_size_gb=_int(cfg, "dataVolumeSizeGb"),
        data_volume_device=str(_req(cfg, "dataVolumeDevice")),
        data_mount=_rule("dataMount", str(_req(cfg, "dataMount")), inputs.abs_path),
        repo_host_name=_rule("repoHostName", str(_req(cfg, "repoHostName")), inputs.host_address),
        repo_host_ip=repo_ip,
        repo_host_user=_rule("repoHostUser", str(_req(cfg, "repoHostUser")), inputs.unix_user),
        repo_path=_rule("repoPath", str(_req(cfg, "repoPath")), inputs.abs_path),
        backup_bucket=_rule("backupBucket", str(_req(cfg, "backupBucket")), inputs.bucket),
        backup_path=backup_path,
        cipher_secret_name=_rule("cipherSecretName", str(_req(cfg, "cipherSecretName")), inputs.secret_name),
        app_secret_name=_rule("appSecretName", str(_req(cfg, "appSecretName")), inputs.secret_name),
        stanza=stanza,
        shared_stanza=shared,
        postgres_major=major,
        postgres_version=postgres_version,
        postgis_version=_rule("postgisVersion", str(_req(cfg, "postgisVersion")), inputs.version),
        timescaledb_version=_rule("timescaledbVersion", str(_req(cfg, "timescaledbVersion")), inputs.version),
        direct_transfer=direct,
        source_cidr=source_cidr,
    )
