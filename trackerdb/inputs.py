"""Rules for values that come from outside: stack outputs, invoke.yaml, the Pulumi config, flags. Pure.

Every value here ends up somewhere that interprets it: a stanza in ``archive_command`` and IAM prefixes,
a database name in ``pg_hba.conf`` (where ``all`` is a keyword), an address in ``known_hosts``, a path
in ``fstab`` or pgBackRest's config. Checking only that a key exists lets ``x;cmd`` through, so each
rule here says what a safe value looks like.

A rule takes any value and returns ``None`` (fine) or a short phrase saying what is wrong
("may hold only letters, digits, ..."); the caller names the key and raises its own error type.
``trackerdb.settings`` (task layer) and ``infra.config`` (``pulumi up``) both apply these, so one
rule is written once. This module imports only the standard library: it is the one piece of
``trackerdb`` besides ``inventory`` that ``infra`` may import (docs/architecture.md).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable

Rule = Callable[[object], "str | None"]

#: Stanza names go into archive_command, IAM resource ARNs and s3:prefix patterns: no wildcards,
#: slashes, variables, quotes or shell.
STANZA_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

#: Narrowest prefix still treated as "the world or close to it", per family. An IPv4 /8 is 16 M
#: addresses; IPv6 sites get a /48 and providers a /32 or shorter.
TOO_WIDE = {4: 8, 6: 32}

#: pg_hba keywords (a database or role column value that means "many") and role names PostgreSQL reserves.
PG_HBA_KEYWORDS = frozenset({"all", "sameuser", "samerole", "samegroup", "replication"})
PG_RESERVED_ROLES = frozenset({"public", "none", "current_user", "session_user", "current_role"})

_PG_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_UNIX_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_INSTANCE_RE = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
_VOLUME_RE = re.compile(r"^vol-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
_SG_RE = re.compile(r"^sg-[0-9a-z]{1,32}$")
_REGION_RE = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}$")
_AZ_RE = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}[a-z]$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SECRET_RE = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")
_IAM_NAME_RE = re.compile(r"^[A-Za-z0-9+=,.@_-]{1,128}$")
_VERSION_RE = re.compile(r"^[0-9]{1,4}(?:\.[0-9]{1,4}){1,2}$")
_ENV_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_HOST_KEY_RE = re.compile(r"^(?:ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)) [A-Za-z0-9+/]+={0,3}$")


def _text(v: object) -> str | None:
    return None if isinstance(v, str) else f"must be text, not {type(v).__name__}"


def stanza(v: object) -> str | None:
    if not isinstance(v, str) or not STANZA_RE.match(v):
        return ("may hold only letters, digits, '.', '_' and '-' "
                "(at most 64; it becomes part of archive_command and the IAM policy's S3 prefixes)")
    return None


def pg_name(v: object) -> str | None:
    """A database or role name that needs no quoting anywhere (pg_hba, connection strings, file names)."""
    if not isinstance(v, str) or not _PG_NAME_RE.match(v):
        return "must be a lower-case PostgreSQL name (a-z, 0-9, '_'; at most 63; not starting with a digit)"
    if v in PG_HBA_KEYWORDS or v in PG_RESERVED_ROLES:
        return "is a pg_hba keyword or reserved role name, which would match far more than one name"
    return None


def unix_user(v: object) -> str | None:
    if not isinstance(v, str) or not _UNIX_USER_RE.match(v):
        return "is not a plain user name (a-z, 0-9, '_', '-'; at most 32)"
    return None


def ipv4(v: object) -> str | None:
    try:
        ipaddress.IPv4Address(v if isinstance(v, str) else "")
    except ValueError:
        return "is not an IPv4 address"
    return None


def host_address(v: object) -> str | None:
    """An IP address or a DNS name: what lands in known_hosts, ssh's argv and pgBackRest's config."""
    if isinstance(v, str):
        try:
            ipaddress.ip_address(v)
            return None
        except ValueError:
            if _HOSTNAME_RE.match(v):
                return None
    return "is not an IP address or a DNS host name"


def endpoint(v: object) -> str | None:
    """``host`` or ``host:port`` (pgBackRest's repo2-s3-endpoint)."""
    host, sep, p = v.rpartition(":") if isinstance(v, str) and v.count(":") == 1 else (v, "", "")
    if host_address(host) is not None or (sep and port(p)[1] is not None):
        return "is not a host name or host:port"
    return None


def network(v: object) -> str | None:
    """One application network in CIDR notation, never the world or close to it."""
    try:
        net = ipaddress.ip_network(v if isinstance(v, str) else "", strict=True)
    except ValueError:
        return "is not a network in CIDR notation (like 10.0.1.0/24, no host bits set)"
    if too_wide(net):
        return (f"would open PostgreSQL to the world or close to it; list only the application's networks "
                f"(IPv4 /{TOO_WIDE[4]} or longer, IPv6 /{TOO_WIDE[6]} or longer)")
    return None


def source_network(v: object) -> str | None:
    """The source host's network of the target's SSH egress rule: one host, IPv4 /24 or longer."""
    try:
        net = ipaddress.ip_network(v if isinstance(v, str) else "", strict=True)
    except ValueError:
        return "is not a network in CIDR notation (like 172.31.5.6/32)"
    if net.version != 4 or net.prefixlen < 24:
        return "is too wide for SSH to one host; give the source's address as a /32 (IPv4, /24 or longer)"
    return None


def too_wide(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    return net.prefixlen < TOO_WIDE[net.version]


def networks(v: object) -> str | None:
    if not isinstance(v, (list, tuple)) or not v:
        return "must be a non-empty list of networks"
    for item in v:
        if (problem := network(item)) is not None:
            return f"entry {item!r} {problem}"
    return None


def abs_path(v: object) -> str | None:
    """An absolute, normalised path below ``/`` (fstab, pgBackRest's config, shell): no spaces, no '..'."""
    if not isinstance(v, str) or not v.startswith("/") or v.strip("/") == "":
        return "must be an absolute path below /"
    parts = v.strip("/").split("/")
    if any(p in ("", ".", "..") or not _SEGMENT_RE.match(p) for p in parts) or v.endswith("/") and len(v) > 1:
        return "must be a normalised path of letters, digits, '.', '_' and '-' (no spaces, '//', '.' or '..')"
    return None


def _matching(rx: "re.Pattern[str]", problem: str) -> Rule:
    """The rule for a text that must match ``rx`` whole (anchored patterns)."""
    return lambda v: None if isinstance(v, str) and rx.match(v) else problem


instance_id = _matching(_INSTANCE_RE, "is not an EC2 instance id (i- and 8 or 17 hex digits)")
volume_id = _matching(_VOLUME_RE, "is not an EBS volume id (vol- and 8 or 17 hex digits)")
security_group_id = _matching(_SG_RE, "is not a security group id (sg-...)")
region = _matching(_REGION_RE, "is not an AWS region name (like eu-west-2)")
availability_zone = _matching(_AZ_RE, "is not an availability zone (like eu-west-2a)")
secret_name = _matching(_SECRET_RE, "is not a Secrets Manager name (letters, digits, /_+=.@-)")
iam_name = _matching(_IAM_NAME_RE, "is not an IAM name")
version = _matching(_VERSION_RE, "is not a version number (like 2.18.2)")
environment = _matching(_ENV_RE, "is not an environment name (like prod or lab)")
host_key = _matching(_HOST_KEY_RE, "is not one public key line ('ssh-ed25519 AAAA...')")


def bucket(v: object) -> str | None:
    return None if isinstance(v, str) and _BUCKET_RE.match(v) and ".." not in v else "is not an S3 bucket name"


def boolean(v: object) -> str | None:
    return None if isinstance(v, bool) else "must be true or false (not text)"


def optional(rule: Rule) -> Rule:
    """``rule`` for a value that may also be absent (None or '')."""
    return lambda v: None if v in (None, "") else rule(v)


def integer(v: object, lo: int, hi: int) -> tuple[int | None, str | None]:
    """``(value, None)`` for a whole number in [lo, hi] (an int, or text of one), else ``(None, problem)``."""
    if isinstance(v, bool):
        n = None
    elif isinstance(v, int):
        n = v
    elif isinstance(v, float) and v.is_integer():
        n = int(v)
    elif isinstance(v, str) and re.fullmatch(r"[+-]?[0-9]{1,12}", v.strip()):
        n = int(v)
    else:
        n = None
    if n is None:
        return None, "must be a whole number"
    if not lo <= n <= hi:
        return None, f"must be between {lo} and {hi}"
    return n, None


def number(v: object, lo: float, hi: float) -> tuple[float | None, str | None]:
    """``(value, None)`` for a finite number in [lo, hi] (a number, or text of one), else ``(None, problem)``."""
    try:  # what YAML, JSON and flags give: numbers and text (a bool is not a number here)
        n = float(v) if isinstance(v, (int, float, str)) and not isinstance(v, bool) else math.nan
    except ValueError:
        n = math.nan
    if not math.isfinite(n):
        return None, "must be a number"
    if not lo <= n <= hi:
        return None, f"must be between {lo:g} and {hi:g}"
    return n, None


def port(v: object) -> tuple[int | None, str | None]:
    return integer(v, 1, 65535)
