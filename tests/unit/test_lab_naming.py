"""Lab naming and address allocation (pure)."""

import ipaddress

import pytest

from lab.naming import ROLES, Names, check_name, subnet_for, volume_hex
from lab.util import LabError


@pytest.mark.parametrize("name", ["devlab", "ci", "lab0", "a", "x-1"])
def test_valid_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "Dev", "a b", "-x", "a/b", "x" * 40, "../etc"])
def test_invalid_names_are_refused(name):
    with pytest.raises(LabError):
        check_name(name)


def test_subnet_is_stable_private_and_per_name():
    a, b = subnet_for("devlab"), subnet_for("ci")
    assert a == subnet_for("devlab")
    assert a != b
    for net in (a, b):
        assert net.prefixlen == 24
        assert net.subnet_of(ipaddress.ip_network("10.200.0.0/13")) or net.subnet_of(ipaddress.ip_network("10.208.0.0/12")) \
            or net.subnet_of(ipaddress.ip_network("10.224.0.0/12")) or net.subnet_of(ipaddress.ip_network("10.240.0.0/13"))
        assert 200 <= int(str(net.network_address).split(".")[1]) <= 249


def test_subnet_skips_taken_networks():
    first = subnet_for("devlab")
    second = subnet_for("devlab", taken=[str(first)])
    assert second != first
    assert not second.overlaps(first)
    # a host route covering the whole range forces an error, not an overlap
    with pytest.raises(LabError):
        subnet_for("devlab", taken=["10.0.0.0/8"])


def test_names_fit_kernel_limits_and_are_distinct():
    n = Names("a-rather-long-instance-name-30c", subnet_for("x"))
    ifaces = [n.bridge] + [n.veth(r) for r in ROLES] + [n.veth(r) + "p" for r in ROLES]
    assert all(len(i) <= 15 for i in ifaces)
    assert len(set(ifaces)) == len(ifaces)
    assert len({n.netns(r) for r in ROLES}) == 4
    other = Names("b", subnet_for("b"))
    assert other.bridge != n.bridge and other.netns("target") != n.netns("target")


def test_addresses():
    n = Names("devlab", ipaddress.ip_network("10.201.7.0/24"))
    assert n.gateway == "10.201.7.1"
    assert [n.ip(r) for r in ROLES] == ["10.201.7.10", "10.201.7.11", "10.201.7.12", "10.201.7.13"]


def test_volume_id_looks_like_ebs():
    n = Names("devlab", subnet_for("devlab"))
    assert n.volume_id.startswith("vol-") and len(n.volume_id) == 21
    int(n.volume_id[4:], 16)
    assert volume_hex("devlab") != volume_hex("ci")
    assert n.instance_id.startswith("i-") and len(n.instance_id) == 19
