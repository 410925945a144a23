import configparser

import pytest

from tests.conftest import prod_outputs
from trackerdb.backrest import conf
from trackerdb.errors import ConfigError
from trackerdb.settings import Settings

PASS = "s3cr3t-Passphrase/with+chars="


def prod(**cfg):
    return Settings.from_parts({"repo": {"host_key": "ssh-ed25519 AAAAC3NzaKEY"}} | cfg, prod_outputs())


def lab():
    return prod(s3_endpoint="aws.lab:443", s3_uri_style="path", s3_key_type="shared", s3_verify_tls=False,
                s3_credentials={"access_key_id": "testing", "secret_access_key": "testing-secret"})


def parsed(text):
    cp = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    cp.optionxform = str
    cp.read_string(text)
    return cp


@pytest.mark.parametrize("key, value", [
    ("repo3-host", "pg-backrest.timescale.glimpse.internal"),
    ("repo3-host-user", "postgres"),
    ("repo3-path", "/var/pg_backrest_data/repo3"),
    ("repo3-cipher-type", "aes-256-cbc"),
    ("repo3-cipher-pass", PASS),
    ("repo2-type", "s3"),
    ("repo2-s3-bucket", "glimpse-timescale-backups"),
    ("repo2-s3-region", "eu-west-2"),
    ("repo2-path", "/pgbackrest"),
    ("repo2-s3-key-type", "auto"),
    ("repo2-s3-endpoint", "s3.eu-west-2.amazonaws.com"),
    ("repo2-cipher-type", "aes-256-cbc"),
    ("repo2-cipher-pass", PASS),
    ("compress-type", "zst"),
    ("process-max", "4"),
    ("start-fast", "y"),
])
def test_production_global_section_follows_the_runbook(key, value):
    assert parsed(conf.render(prod(), PASS))["global"][key] == value


def test_production_has_no_s3_keys_and_verifies_tls():
    g = parsed(conf.render(prod(), PASS))["global"]
    assert "repo2-s3-key" not in g and "repo2-s3-key-secret" not in g
    assert "repo2-storage-verify-tls" not in g
    assert "repo1-path" not in g  # no accidental local repo1


def test_stanza_section_uses_our_stanza_and_spool_on_the_data_volume():
    cp = parsed(conf.render(prod(), PASS))
    st = cp["tracker-dedicated"]
    assert "tracker" not in cp.sections()
    assert st["pg1-path"] == "/var/lib/postgresql/16/main"
    assert st["archive-async"] == "y"
    assert st["archive-push-queue-max"] == "4GB"
    assert st["spool-path"] == "/var/lib/postgresql/pgbackrest-spool"
    assert not st["spool-path"].startswith("/var/spool")


def test_lab_s3_uses_endpoint_port_path_style_and_shared_keys():
    g = parsed(conf.render(lab(), PASS))["global"]
    assert (g["repo2-s3-endpoint"], g["repo2-storage-port"]) == ("aws.lab", "443")
    assert g["repo2-s3-uri-style"] == "path"
    assert (g["repo2-s3-key-type"], g["repo2-s3-key"], g["repo2-s3-key-secret"]) == ("shared", "testing", "testing-secret")
    assert g["repo2-storage-verify-tls"] == "n"


def test_ca_bundle_means_verified_tls_with_the_ca_file(tmp_path):
    s = lab().with_(s3_verify_tls=True, aws_ca_bundle=str(tmp_path / "ca.pem"))
    g = parsed(conf.render(s, PASS))["global"]
    assert g["repo2-storage-ca-file"] == conf.CA_PATH and "repo2-storage-verify-tls" not in g


def test_shared_key_type_without_credentials_is_a_config_error():
    with pytest.raises(ConfigError):
        conf.render(prod(s3_key_type="shared"), PASS)


@pytest.mark.parametrize("bad", ["", "Kq7-first-half\nZr9-second-half", "Kq7-first-half\n"])
def test_bad_passphrase_is_refused_without_showing_it(bad):
    with pytest.raises(ConfigError) as e:
        conf.render(prod(), bad)
    text = e.value.one_line() + str(e.value)
    assert "passphrase" in text
    for part in (p for p in bad.split("\n") if p):
        assert part not in text


def test_redact_hides_every_secret_value():
    text = conf.redact(conf.render(lab(), PASS))
    assert PASS not in text and "testing-secret" not in text
    assert "repo3-cipher-pass=<redacted>" in text


def test_probe_env_is_the_same_configuration_without_a_file():
    env = dict(line.split("=", 1) for line in conf.probe_env(prod(), PASS))
    assert env["PGBACKREST_CONFIG"] == "/dev/null"
    assert env["PGBACKREST_STANZA"] == "tracker-dedicated"
    assert env["PGBACKREST_REPO3_HOST"] == "pg-backrest.timescale.glimpse.internal"
    assert env["PGBACKREST_REPO3_CIPHER_PASS"] == PASS
    assert env["PGBACKREST_SPOOL_PATH"] == "/var/lib/postgresql/pgbackrest-spool"


def test_dropin_sets_archiving_for_our_stanza():
    s = prod()
    text = conf.dropin_text(s)
    assert conf.dropin_path(s) == "/etc/postgresql/16/main/conf.d/60-pgbackrest.conf"
    assert "archive_mode = on\n" in text
    assert "archive_command = 'pgbackrest --stanza=tracker-dedicated archive-push %p'\n" in text
    assert "restore_command = 'pgbackrest --stanza=tracker-dedicated archive-get %f \"%p\"'\n" in text
    assert "archive_timeout = '1min'\n" in text
