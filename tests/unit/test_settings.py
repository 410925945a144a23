import json

import pytest

from tests.conftest import prod_outputs
from trackerdb.errors import ConfigError
from trackerdb.settings import Settings


def test_settings_from_prod_outputs_derives_paths():
    s = Settings.from_parts({}, prod_outputs())
    assert s.cluster_dir == "/var/lib/postgresql/16/main"
    assert s.data_volume_by_id == "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0a1b2c3d4e5f60718"
    assert s.target.address == "172.31.10.20"
    assert s.source is None


@pytest.mark.parametrize(
    "over, cfg, fragment",
    [
        ({"stanza": "tracker"}, {}, "shared host's stanza"),
        ({"app_cidrs": ["0.0.0.0/0"]}, {}, "open PostgreSQL to the world"),
        ({"app_cidrs": ["not-a-net"]}, {}, "is not a network"),
        ({"data_volume_id": "disk-1"}, {}, "is not an EBS volume id"),
        ({}, {"package_source": "yum"}, "package_source"),
        ({}, {"fs_type": "btrfs"}, "fs_type"),
    ],
)
def test_settings_rejects_bad_values_in_one_line(over, cfg, fragment):
    with pytest.raises(ConfigError) as e:
        Settings.from_parts(cfg, prod_outputs(**over))
    assert fragment in e.value.one_line()
    assert "\n" not in e.value.one_line()


def test_missing_output_key_is_named():
    o = prod_outputs()
    del o["data_volume_id"]
    with pytest.raises(ConfigError, match="data_volume_id"):
        Settings.from_parts({}, o)


def test_overlay_file_wins_over_invoke_yaml(tmp_path):
    outputs = tmp_path / "out.json"
    outputs.write_text(json.dumps(prod_outputs(environment="lab")))
    overlay = tmp_path / "settings.json"
    overlay.write_text(json.dumps({"stack_outputs": str(outputs), "package_source": "debian", "source": {"address": "10.0.0.3"}}))
    s = Settings.load({"package_source": "pgdg", "source": {"address": None, "user": "admin"}}, env={"TRACKERDB_SETTINGS": str(overlay)})
    assert s.package_source == "debian"
    assert s.source.address == "10.0.0.3" and s.source.user == "admin"
    assert s.environment == "lab"


def test_lab_env_without_lab_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError) as e:
        Settings.load({}, env={"TRACKERDB_ENV": "lab", "TRACKERDB_LAB": "no-such-lab-instance"})
    assert "invoke lab.up" in e.value.one_line()


def test_owner_map_comes_from_config_and_defaults_to_none():
    import yaml
    from pathlib import Path

    assert Settings.from_parts({}, prod_outputs()).owner_map == ()
    shipped = yaml.safe_load((Path(__file__).resolve().parents[2] / "invoke.yaml").read_text())["trackerdb"]
    assert Settings.from_parts(shipped, prod_outputs()).owner_map == ()  # never a silent default
    s = Settings.from_parts({"owner_map": [{"from": "postgres", "to": "tracker", "schemas": ["tracker"]}]}, prod_outputs())
    (m,) = s.owner_map
    assert (m.frm, m.to, m.schemas) == ("postgres", "tracker", ("tracker",))
    with pytest.raises(ConfigError) as e:
        Settings.from_parts({"owner_map": [{"from": "postgres"}]}, prod_outputs())
    assert "owner_map entry 1" in e.value.one_line() and "\n" not in e.value.one_line()


def test_dump_compression_defaults_to_lz4_and_refuses_what_pg_dump_would_not_take():
    from trackerdb.errors import ConfigError
    from trackerdb.migrate.dump import dump_script
    s = Settings.from_parts({}, prod_outputs())
    assert s.dump_compress == "lz4"
    script = dump_script(pg_bin="/usr/lib/postgresql/16/bin", port=5432, database="tracker", facts_sql=[],
                         facts_path="/tmp/f.json", out_file=None, compress=s.dump_compress)
    assert " -Fc --compress=lz4 --snapshot=" in script
    assert Settings.from_parts({"dump_compress": "gzip:6"}, prod_outputs()).dump_compress == "gzip:6"
    with pytest.raises(ConfigError, match="not a pg_dump --compress method"):
        Settings.from_parts({"dump_compress": "lz4; rm -rf /"}, prod_outputs())
