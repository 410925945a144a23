"""Pure naming and address allocation for a lab instance (unit-tested without root)."""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from trackerdb.settings import LAB_NAME_RE as _NAME_RE  # one rule for the lab and the tasks

from .util import LabError

ROLES = ("target", "source", "repo", "aws")
HOST_OCTET = {"target": 10, "source": 11, "repo": 12, "aws": 13}
SSH_ROLES = ("target", "source", "repo")
REPO_NAME = "pg-backrest.timescale.glimpse.internal"
AWS_NAME = "aws.lab.internal"


def check_name(name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise LabError(
            f"lab instance name {name!r} is not valid",
            hint="use 1-31 lowercase letters, digits or '-' (e.g. TRACKERDB_LAB=devlab)",
        )
    return name


def _digest(name: str, salt: int = 0) -> bytes:
    return hashlib.sha256(f"trackerdb-lab:{name}:{salt}".encode()).digest()


def subnet_for(name: str, taken=(), salt_max: int = 64) -> ipaddress.IPv4Network:
    """A /24 in 10.200.0.0-10.249.255.0 derived from the name; the next salt when it overlaps ``taken``."""
    taken = [ipaddress.ip_network(t, strict=False) for t in taken]
    for salt in range(salt_max):
        d = _digest(name, salt)
        net = ipaddress.IPv4Network(f"10.{200 + d[0] % 50}.{d[1]}.0/24")
        if not any(net.overlaps(t) for t in taken):
            return net
    raise LabError(f"no free lab subnet for {name!r}", hint="run lab.down on unused instances")


def volume_hex(name: str) -> str:
    """17 hex digits, like an EBS volume id without ``vol-`` (stable per instance name)."""
    return "0" + _digest(name, 1000).hex()[:16]


@dataclass(frozen=True)
class Names:
    """Every kernel object name an instance uses. Interface names stay <= 15 characters."""

    name: str
    subnet: ipaddress.IPv4Network

    @property
    def tag(self) -> str:
        return _digest(self.name).hex()[:6]

    @property
    def bridge(self) -> str:
        return f"tlb{self.tag}"

    def netns(self, role: str) -> str:
        return f"tdb-{self.name}-{role}"

    def veth(self, role: str) -> str:
        return f"tlv{self.tag}{role[0]}"

    def ip(self, role: str) -> str:
        return str(self.subnet.network_address + HOST_OCTET[role])

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    def hostname(self, role: str) -> str:
        return f"{role}.{self.name}.lab.internal"

    @property
    def volume_id(self) -> str:
        return "vol-" + volume_hex(self.name)

    @property
    def instance_id(self) -> str:
        return "i-" + _digest(self.name, 2000).hex()[:17]
