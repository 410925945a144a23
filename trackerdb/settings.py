"""Settings: one typed, validated object built from invoke.yaml, an optional overlay and the stack outputs.

Layers, later wins:
1. the ``trackerdb`` section of invoke.yaml (non-secret production defaults),
2. an overlay file: ``$TRACKERDB_SETTINGS``, or the lab's ``settings.json`` when ``TRACKERDB_ENV=lab``,
3. the stack outputs (the deployed inventory) for everything the infrastructure decided.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from . import inputs, inventory, limits
from .errors import ConfigError
from .owner_map import OwnerMapping, parse_owner_map
from .window_config import AppHooks, NotifyConfig, SwitchConfig, parse_application, parse_notify, parse_switch

LAB_ROOT = "/var/lib/trackerdb-lab"
_COMPRESS = re.compile(r"^(none|gzip|lz4|zstd)(:[0-9]{1,2})?$")  # pg_dump --compress METHOD[:LEVEL]


LAB_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")  # a lab instance name (lab/naming.py uses this one)


def lab_name(env: Mapping[str, str] | None = None) -> str:
    """The lab instance (several can run side by side): ``$TRACKERDB_LAB``, default ``lab0``."""
    name = (os.environ if env is None else env).get("TRACKERDB_LAB") or "lab0"
    if not LAB_NAME_RE.match(name):
        raise ConfigError(f"lab instance name {name!r} (TRACKERDB_LAB) is not valid",
                          hint="use 1-31 lowercase letters, digits or '-' (e.g. TRACKERDB_LAB=devlab)")
    return name


def lab_dir(env: Mapping[str, str] | None = None) -> Path:
    """State of one lab instance: /var/lib/trackerdb-lab/<name> (the lab writes nowhere else)."""
    return Path(f"{LAB_ROOT}/{lab_name(env)}")


@dataclass(frozen=True)
class HostSpec:
    """How to reach one host over SSH. Host keys always come from ``known_hosts`` (pinned)."""

    name: str
    address: str
    user: str = "admin"
    port: int = 22
    key_file: str | None = None
    known_hosts: str | None = None
    # e.g. SSM: "aws ssm start-session --target %h --document-name AWS-StartSSHSession --parameters portNumber=%p"
    proxy_command: str | None = None
    ssh_config: str | None = None

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any] | None) -> "HostSpec | None":
        if not d or not d.get("address"):
            return None
        keys = ("address", "user", "port", "key_file", "known_hosts", "proxy_command", "ssh_config")
        fields = {k: d[k] for k in keys if d.get(k) is not None}
        if "port" in fields:
            fields["port"] = _int(f"trackerdb.{name}.port", fields["port"], 1, 65535)
        return cls(name=name, **fields)


@dataclass(frozen=True)
class Settings:
    environment: str
    region: str
    database: str
    owner_role: str
    postgres_major: int
    postgres_version: str  # exactly, e.g. "16.10" (the source's): provisioning pins and holds it
    postgis_version: str
    timescaledb_version: str
    package_source: str  # "pgdg" (production) or "debian" (the lab)
    data_volume_id: str
    data_volume_size_gb: int
    data_mount: str
    fs_type: str
    backup_bucket: str
    backup_path: str
    cipher_secret_name: str
    app_secret_name: str
    repo_host_name: str
    repo_host_ip: str
    repo_host_user: str
    repo_path: str
    repo_host_key: str | None  # "ssh-ed25519 AAAA..." pinned public key of the repository host
    repo_writable: bool  # may we write the repository host's authorized_keys ourselves (lab) or not (prod)
    stanza: str
    shared_stanza: str
    app_cidrs: tuple[str, ...]
    target: HostSpec
    source: HostSpec | None
    repo: HostSpec | None
    aws_endpoint_url: str | None = None
    aws_ca_bundle: str | None = None
    s3_endpoint: str | None = None  # pgBackRest repo2-s3-endpoint (lab only; production uses the AWS default)
    s3_verify_tls: bool = True
    s3_uri_style: str | None = None
    s3_key_type: str = "auto"
    s3_credentials: dict[str, str] | None = None  # lab only: moto's fixed test keys (not secrets)
    source_decommissioned: bool = False
    switch: SwitchConfig = field(default_factory=SwitchConfig)
    state_dir: str = "artifacts"
    pg_port: int = 5432
    # The source cluster's port when it differs from the target's (None: the same as pg_port).
    source_pg_port: int | None = None
    # Deliberate owner changes applied by restore and expected by verify (migrate.privileges.OwnerMapping).
    owner_map: tuple[OwnerMapping, ...] = ()
    # PostgreSQL's server certificate + key: Secrets Manager secret NAME (JSON certificate/private_key);
    # None = Debian's snakeoil pair, allowed in the lab only (trackerdb/tls.py)
    tls_secret_name: str | None = None
    tls_ca_file: str | None = None  # CA bundle (operator's machine) for verify-full in our checks
    # The application's side of the window (trackerdb/cutover/hooks.py) and phase notifications
    # (trackerdb/notify.py: the webhook URL is a secret, referenced by name)
    # The cutover's final dump: "direct" (the target pulls it from the source over SSH, host to host) or
    # "relay" (through this machine). Default from the stack output direct_transfer; ``transfer_explicit``
    # when trackerdb.transfer says so (then a direct path that does not work is refused, not replaced).
    transfer: str = "relay"
    transfer_explicit: bool = False
    # pg_dump --compress for the dumps (pg_dump 16+): lz4 dumps the 2 GiB lab database in 29 s against
    # zlib's 68 s for 53 % more bytes (benchmarks/peer_benchmark.py); "gzip" trades the time back for bytes
    dump_compress: str = "lz4"
    # where the target reaches the source's sshd (default: the source's address as this machine uses it)
    transfer_source_address: str | None = None
    application: AppHooks = field(default_factory=AppHooks, compare=False)
    notify: NotifyConfig = field(default_factory=NotifyConfig, compare=False)
    # lock_timeout / statement_timeout per window phase over trackerdb/limits.py's DEFAULTS
    window_limits: dict[str, Any] = field(default_factory=dict, compare=False)
    outputs: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    # ---- derived ---------------------------------------------------------------------------
    @property
    def cluster_dir(self) -> str:
        return f"{self.data_mount}/{self.postgres_major}/main"

    @property
    def pg_conf_dir(self) -> str:
        """Debian's configuration directory of the cluster (postgresql.conf, pg_hba.conf, conf.d/)."""
        return f"/etc/postgresql/{self.postgres_major}/main"

    @property
    def source_port(self) -> int:
        """The port of the source's cluster (``source_pg_port``, else ``pg_port``)."""
        return int(self.source_pg_port or self.pg_port)

    @property
    def pg_bin(self) -> str:
        return f"/usr/lib/postgresql/{self.postgres_major}/bin"

    @property
    def data_volume_by_id(self) -> str:
        """The Nitro NVMe by-id path of the data volume (the id without its hyphen)."""
        return "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_" + self.data_volume_id.replace("-", "")

    @property
    def is_lab(self) -> bool:
        return self.environment == "lab"

    def with_(self, **changes: Any) -> "Settings":
        """A copy with ``changes``; ``application``, ``switch`` and ``notify`` may be given as config mappings
        (parsed and checked as when loaded)."""
        for key, parse in _WINDOW_PARSERS.items():
            if isinstance(changes.get(key), dict):
                changes[key] = parse(changes[key])
        return replace(self, **changes)

    # ---- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, config: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        merged = _deep_merge({}, _plain(config or {}))
        overlay_path = env.get("TRACKERDB_SETTINGS")
        if not overlay_path and env.get("TRACKERDB_ENV") == "lab":
            overlay_path = str(lab_dir(env) / "settings.json")
        if overlay_path:
            p = Path(overlay_path)
            if not p.is_file():
                hint = "run `invoke lab.up` first" if env.get("TRACKERDB_ENV") == "lab" else "check TRACKERDB_SETTINGS"
                raise ConfigError(f"settings overlay {p} does not exist", hint=hint)
            merged = _deep_merge(merged, json.loads(p.read_text()))
        outputs_path = env.get("TRACKERDB_STACK_OUTPUTS") or merged.get("stack_outputs")
        outputs = inventory.load(outputs_path, stack=merged.get("stack", "prod"))
        return cls.from_parts(merged, outputs)

    @classmethod
    def from_parts(cls, cfg: dict[str, Any], outputs: dict[str, Any]) -> "Settings":
        o = inventory.validate(dict(outputs), "stack outputs")
        target_cfg = dict(cfg.get("target") or {})
        target_cfg.setdefault("address", o["private_ip"])
        target = HostSpec.from_dict("target", target_cfg)
        if target is None:  # the stack outputs always hold private_ip (inventory.validate)
            raise ConfigError("no target address", hint="set trackerdb.target.address or the stack output private_ip")
        repo_cfg = dict(cfg.get("repo") or {})
        s = cls(
            environment=o["environment"],
            region=o["region"],
            database=cfg.get("database", "tracker"),
            owner_role=cfg.get("owner_role", "tracker"),
            postgres_major=_int("stack output postgres_major", o["postgres_major"], 10, 99),
            postgres_version=str(o["postgres_version"]),
            postgis_version=str(o["postgis_version"]),
            timescaledb_version=str(o["timescaledb_version"]),
            package_source=cfg.get("package_source", "pgdg"),
            data_volume_id=o["data_volume_id"],
            data_volume_size_gb=_int("stack output data_volume_size_gb", o["data_volume_size_gb"], 1, 65536),
            data_mount=o["data_mount"],
            fs_type=cfg.get("fs_type", "ext4"),
            backup_bucket=o["backup_bucket"],
            backup_path=o["backup_path"],
            cipher_secret_name=o["cipher_secret_name"],
            app_secret_name=o["app_secret_name"],
            repo_host_name=o["repo_host_name"],
            repo_host_ip=o["repo_host_ip"],
            repo_host_user=o["repo_host_user"],
            repo_path=o["repo_path"],
            repo_host_key=repo_cfg.get("host_key"),
            repo_writable=_bool("trackerdb.repo.writable", repo_cfg.get("writable", False)),
            stanza=o["stanza"],
            shared_stanza=o["shared_stanza"],
            app_cidrs=tuple(o["app_cidrs"]) if isinstance(o["app_cidrs"], (list, tuple)) else (o["app_cidrs"],),
            target=target,
            source=HostSpec.from_dict("source", cfg.get("source")),
            repo=HostSpec.from_dict("repo", repo_cfg),
            aws_endpoint_url=cfg.get("aws_endpoint_url"),
            aws_ca_bundle=cfg.get("aws_ca_bundle"),
            s3_endpoint=cfg.get("s3_endpoint"),
            s3_verify_tls=_bool("trackerdb.s3_verify_tls", cfg.get("s3_verify_tls", True)),
            s3_uri_style=cfg.get("s3_uri_style"),
            s3_key_type=cfg.get("s3_key_type", "auto"),
            s3_credentials=cfg.get("s3_credentials"),
            source_decommissioned=_bool("trackerdb.source_decommissioned", cfg.get("source_decommissioned", False)),
            switch=parse_switch(cfg.get("switch")),
            state_dir=cfg.get("state_dir", "artifacts"),
            pg_port=_int("trackerdb.pg_port", cfg.get("pg_port", 5432), 1, 65535),
            source_pg_port=(_int("trackerdb.source_pg_port", cfg["source_pg_port"], 1, 65535)
                            if cfg.get("source_pg_port") else None),
            owner_map=_owner_map(cfg.get("owner_map")),
            tls_secret_name=cfg.get("tls_secret_name") or None,
            tls_ca_file=cfg.get("tls_ca_file") or None,
            transfer=str(cfg.get("transfer") or ("direct" if o.get("direct_transfer") else "relay")),
            transfer_explicit=bool(cfg.get("transfer")),
            dump_compress=str(cfg.get("dump_compress") or "lz4"),
            transfer_source_address=cfg.get("transfer_source_address") or None,
            application=parse_application(cfg.get("application")),
            notify=parse_notify(cfg.get("notify")),
            window_limits=cfg.get("window_limits") or {},
            outputs=o,
        )
        s.validate()
        return s

    def validate(self) -> None:
        """Every value that reaches a host, one rule a line (trackerdb/inputs.py; infra/config.py applies the same).

        Runs before any connection is made, so a hostile value is one line and no host is touched."""
        o, v = self.outputs, inputs
        _check("stack output environment", self.environment, v.environment)
        _check("stack output region", self.region, v.region)
        _check("stack output data_volume_id", self.data_volume_id, v.volume_id)
        _check("stack output data_volume_size_gb", self.data_volume_size_gb, lambda x: v.integer(x, 1, 65536)[1])
        _check("stack output data_mount", self.data_mount, v.abs_path)
        _check("stack output backup_bucket", self.backup_bucket, v.bucket)
        _check("stack output backup_path", self.backup_path, v.abs_path)
        _check("stack output cipher_secret_name", self.cipher_secret_name, v.secret_name)
        _check("stack output app_secret_name", self.app_secret_name, v.secret_name)
        _check("stack output repo_host_name", self.repo_host_name, v.host_address)
        _check("stack output repo_host_ip", self.repo_host_ip, v.ipv4)
        _check("stack output repo_host_user", self.repo_host_user, v.unix_user)
        _check("stack output repo_path", self.repo_path, v.abs_path)
        _check("stack output stanza", self.stanza, v.stanza)
        _check("stack output shared_stanza", self.shared_stanza, v.stanza)
        _check("stack output postgres_major", self.postgres_major, lambda x: v.integer(x, 10, 99)[1])
        _check("stack output postgres_version", self.postgres_version,
               lambda x: v.version(x) or (None if str(x).split(".")[0] == str(self.postgres_major)
                                          else f"is not a {self.postgres_major}.x version (postgres_major)"))
        _check("stack output postgis_version", self.postgis_version, v.version)
        _check("stack output timescaledb_version", self.timescaledb_version, v.version)
        _check("stack output app_cidrs", list(self.app_cidrs), v.networks)
        if o:  # what only the stack outputs hold (a Settings built in code may have none)
            _check("stack output instance_id", o.get("instance_id"), v.instance_id)
            _check("stack output private_ip", o.get("private_ip"), v.ipv4)
            _check("stack output availability_zone", o.get("availability_zone"), v.availability_zone)
            _check("stack output root_volume_size_gb", o.get("root_volume_size_gb"),
                   lambda x: v.integer(x, 1, 65536)[1])
            _check("stack output security_group_id", o.get("security_group_id"), v.security_group_id)
            _check("stack output role_name", o.get("role_name"), v.iam_name)
            _check("stack output instance_profile_name", o.get("instance_profile_name"), v.iam_name)
            _check("stack output direct_transfer", o.get("direct_transfer"), v.boolean)
            _check("stack output source_cidr", o.get("source_cidr"), v.optional(v.source_network))
        _check("trackerdb.database", self.database, v.pg_name)
        _check("trackerdb.owner_role", self.owner_role, v.pg_name)
        _check("trackerdb.pg_port", self.pg_port, lambda x: v.port(x)[1])
        _check("trackerdb.source_pg_port", self.source_pg_port, v.optional(lambda x: v.port(x)[1]))
        _check("trackerdb.transfer_source_address", self.transfer_source_address, v.optional(v.host_address))
        _check("trackerdb.repo.host_key", self.repo_host_key, v.optional(v.host_key))
        _check("trackerdb.tls_secret_name", self.tls_secret_name, v.optional(v.secret_name))
        _check("trackerdb.s3_endpoint", self.s3_endpoint, v.optional(v.endpoint))
        _check("trackerdb.s3_uri_style", self.s3_uri_style,
               lambda x: None if x in (None, "host", "path") else "is not host or path")
        _check("trackerdb.s3_key_type", self.s3_key_type,
               lambda x: None if x in ("auto", "shared", "web-id") else "is not auto, shared or web-id")
        for spec in (self.target, self.source, self.repo):
            if spec is not None:
                _check(f"trackerdb.{spec.name}.address", spec.address, v.host_address)
                _check(f"trackerdb.{spec.name}.user", spec.user, v.unix_user)
                _check(f"trackerdb.{spec.name}.port", spec.port, lambda x: v.port(x)[1])
        for i, m in enumerate(self.owner_map):
            _check(f"trackerdb.owner_map entry {i + 1} 'from'", m.frm, v.pg_name)
            _check(f"trackerdb.owner_map entry {i + 1} 'to'", m.to, v.pg_name)
        limits.parse(self.window_limits)  # ConfigError naming the phase and key
        if self.package_source not in ("pgdg", "debian"):
            raise ConfigError(f"package_source {self.package_source!r} is not pgdg or debian",
                              hint="set trackerdb.package_source")
        if self.fs_type not in ("ext4", "xfs"):
            raise ConfigError(f"fs_type {self.fs_type!r} is not ext4 or xfs", hint="set trackerdb.fs_type")
        if not isinstance(self.dump_compress, str) or not _COMPRESS.match(self.dump_compress):
            raise ConfigError(f"dump_compress {self.dump_compress!r} is not a pg_dump --compress method",
                              hint="use lz4 (the default), gzip, zstd or none, optionally with :LEVEL")
        if self.transfer not in ("direct", "relay"):
            raise ConfigError(f"transfer {self.transfer!r} is not direct or relay",
                              hint="set trackerdb.transfer: direct (target pulls from the source) "
                                   "or relay (through this machine)")
        if self.stanza == self.shared_stanza:
            raise ConfigError(
                f"stanza {self.stanza!r} is the shared host's stanza",
                hint="the new cluster has its own system identifier; give it its own stanza name",
            )

    def require_source(self) -> HostSpec:
        if self.source is None:
            raise ConfigError("no source host configured", hint="set trackerdb.source.address in invoke.yaml")
        return self.source

    def require_repo(self) -> HostSpec:
        if self.repo is None:
            raise ConfigError("no repository host SSH access configured", hint="set trackerdb.repo.address")
        return self.repo


def _check(key: str, value: Any, rule: Callable[[Any], str | None]) -> None:
    """One rule of ``validate``: a ConfigError naming the key and its value in one line."""
    problem = rule(value)
    if problem is not None:
        raise ConfigError(f"{key} {_show(value)} {problem}", hint=_hint(key))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _hint(key: str) -> str:
    if key.startswith("stack output"):
        return ("fix the stack's config and re-run `pulumi up` (or `invoke lab.up`); "
                "never edit the stack outputs by hand (TRACKERDB_STACK_OUTPUTS)")
    return "fix it in invoke.yaml's trackerdb section or the settings overlay (TRACKERDB_SETTINGS)"


def _int(key: str, value: Any, lo: int, hi: int) -> int:
    n, problem = inputs.integer(value, lo, hi)
    if problem is not None or n is None:
        raise ConfigError(f"{key} {_show(value)} {problem}", hint=_hint(key))
    return n


def _bool(key: str, value: Any) -> bool:
    _check(key, value, inputs.boolean)
    return bool(value)


def _owner_map(raw: object) -> tuple[OwnerMapping, ...]:
    return parse_owner_map(raw)


_WINDOW_PARSERS: dict[str, Callable[[object], object]] = {
    "application": parse_application, "switch": parse_switch, "notify": parse_notify}


def _plain(cfg: Any) -> Any:
    """Invoke's DataProxy -> plain dict (recursively)."""
    if hasattr(cfg, "items"):
        return {k: _plain(v) for k, v in cfg.items()}
    if isinstance(cfg, list):
        return [_plain(v) for v in cfg]
    return cfg


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out
