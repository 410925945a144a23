"""Lab file renderers and output builders (pure)."""

import ipaddress

from lab import render
from lab.naming import Names
from lab.outputs import settings_overlay, stack_outputs
from trackerdb.inventory import OUTPUT_KEYS
from trackerdb.settings import Settings
from trackerdb.window_config import SwitchConfig

N = Names("devlab", ipaddress.ip_network("10.201.7.0/24"))
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHn0example root@repo"


def test_etc_hosts_maps_production_names_to_lab_hosts_only():
    text = render.etc_hosts(N, "source")
    lines = {ln.split("\t")[0]: ln.split("\t")[1].split() for ln in text.splitlines() if "\t" in ln}
    assert "pg-backrest.timescale.glimpse.internal" in lines["10.201.7.12"]
    assert "aws.lab.internal" in lines["10.201.7.13"]
    assert "target" in lines["10.201.7.10"]
    assert "172.31.203.209" not in text


def test_known_hosts_pins_each_key_by_ip_and_name():
    text = render.known_hosts(N, {"repo": KEY, "target": KEY.replace("example", "other")})
    repo_line = next(ln for ln in text.splitlines() if ln.startswith("10.201.7.12,"))
    hosts, keytype, key = repo_line.split(" ")
    assert "pg-backrest.timescale.glimpse.internal" in hosts.split(",")
    assert keytype == "ssh-ed25519" and "root@repo" not in repo_line
    assert len(text.splitlines()) == 2


def test_sshd_config_is_keys_only():
    text = render.sshd_config()
    assert "PasswordAuthentication no" in text
    assert "PermitRootLogin no" in text
    assert "HostKey /etc/ssh/ssh_host_ed25519_key" in text


def test_apt_sources_only_the_lab_repo():
    assert render.apt_sources() == "deb [trusted=yes] file:/srv/lab-apt ./\n"


def test_launch_script_target_has_volume_and_repo():
    s = render.launch_script("/x/root", "target", loop=("loop7", 7, 7),
                             by_id="/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc", apt_repo="/cache/apt")
    assert "mknod -m 660 /x/root/dev/loop7 b 7 7" in s
    assert "ln -s ../../loop7 /x/root/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc" in s
    assert "mount -o remount,bind,ro /x/root/srv/lab-apt" in s
    assert s.rstrip().endswith("exec chroot /x/root /usr/bin/python3 /usr/local/sbin/lab-init")
    plain = render.launch_script("/x/root", "repo")
    assert "loop" not in plain and "lab-apt" not in plain


def test_source_configs():
    conf = render.source_pgbackrest_conf()
    assert "repo3-host=pg-backrest.timescale.glimpse.internal" in conf
    assert "repo3-host-user=postgres" in conf and "repo3-path=/var/pg_backrest_data/repo3" in conf
    assert "[tracker]" in conf and "pg1-path=/var/lib/postgresql/16/main" in conf
    pg = render.pg_conf("10.201.7.11")
    assert "listen_addresses = 'localhost,10.201.7.11'" in pg
    assert "archive_command = 'pgbackrest --stanza=tracker archive-push %p'" in pg
    assert "shared_preload_libraries = 'timescaledb'" in pg
    assert "timescaledb.license = timescale\n" in pg
    assert render.pg_hba_extra("10.201.7.0/24") == "host all all 10.201.7.0/24 scram-sha-256\n"


def test_nginx_and_cert_ext():
    conf = render.nginx_conf("/s/aws", "10.201.7.13")
    assert "listen 10.201.7.13:443 ssl;" in conf and "proxy_pass http://127.0.0.1:5000;" in conf
    assert "daemon" not in conf  # passed on the command line
    ext = render.server_cert_ext("10.201.7.13")
    assert "DNS:aws.lab.internal" in ext and "IP:10.201.7.13" in ext


def test_stack_outputs_have_exactly_the_inventory_keys():
    o = stack_outputs(N, volume_size_gb=2)
    assert set(o) == set(OUTPUT_KEYS)
    assert o["environment"] == "lab" and o["private_ip"] == "10.201.7.10" and o["repo_host_ip"] == "10.201.7.12"
    assert o["app_cidrs"] == ["10.201.7.0/24"] and o["data_volume_size_gb"] == 2


def test_settings_load_from_lab_files(tmp_path, monkeypatch):
    import json

    overlay = settings_overlay(N, str(tmp_path), repo_host_key=KEY, zone_id="Z123")
    (tmp_path / "stack-outputs.json").write_text(json.dumps(stack_outputs(N, volume_size_gb=2)))
    (tmp_path / "settings.json").write_text(json.dumps(overlay))
    s = Settings.load({}, env={"TRACKERDB_SETTINGS": str(tmp_path / "settings.json")})
    assert s.is_lab and s.package_source == "debian"
    assert s.target.address == "10.201.7.10" and s.target.known_hosts == f"{tmp_path}/known_hosts"
    assert s.repo.address == "10.201.7.12" and s.repo_writable
    assert s.repo_host_key == "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHn0example"
    assert s.data_volume_by_id == "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_" + N.volume_id.replace("-", "")
    assert s.aws_endpoint_url == "https://10.201.7.13" and s.s3_endpoint == "aws.lab.internal"
    assert s.switch == SwitchConfig(mode="route53", zone_id="Z123", record_name="db.tracker.lab.internal")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    from trackerdb.aws import client

    creds = client(s, "s3")._request_signer._credentials
    assert (creds.access_key, creds.secret_key) == ("testing", "testing")
    assert client(s.with_(environment="prod"), "s3")._request_signer._credentials is None or \
        client(s.with_(environment="prod"), "s3")._request_signer._credentials.access_key != "testing"
