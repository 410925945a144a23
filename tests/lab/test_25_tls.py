"""TLS on the provisioned lab target, observed from the application network (the lab bridge, inside
app_cidrs) and on the host: clear text is refused, TLS works, an operator-supplied certificate is
installed owner-only and verifies against its CA, and our app-path checks report the TLS session.
Also: a failed ALTER ROLE in the provisioning session leaves no SCRAM verifier in the server log."""

from __future__ import annotations

import datetime
import ipaddress
import json
import uuid

import psycopg
import pytest


from .test_20_provision import psql, target  # noqa: F401  (the provisioned target's fixture and psql helper)

pytestmark = pytest.mark.lab
LOG = "/var/log/postgresql/postgresql-{major}-main.log"




@pytest.fixture(scope="module")
def app_db(provisioned, target):
    """The tracker database, so an admitted TLS session gets all the way in (dropped again if we made it)."""
    s = provisioned
    made = psql(target, f"SELECT 1 FROM pg_database WHERE datname = '{s.database}';").stdout.strip() != "1"
    if made:
        psql(target, f'CREATE DATABASE "{s.database}" OWNER "{s.owner_role}";\n')
    yield s
    if made:
        psql(target, f'DROP DATABASE IF EXISTS "{s.database}" WITH (FORCE);\n', check=False)


def _params(s, **over) -> dict:
    from trackerdb.secrets import fetch_secret

    return dict(host=s.outputs["private_ip"], port=s.pg_port, dbname=s.database, user=s.owner_role,
                password=fetch_secret(s, s.app_secret_name).reveal(), connect_timeout=10) | over


def test_clear_text_from_the_app_network_is_refused(app_db):
    with pytest.raises(psycopg.OperationalError) as err:
        psycopg.connect(**_params(app_db, sslmode="disable"))
    msg = str(err.value)
    assert "pg_hba.conf rejects connection" in msg and "no encryption" in msg, msg


def test_tls_from_the_app_network_works_and_the_server_sees_tls(app_db):
    with psycopg.connect(**_params(app_db, sslmode="require")) as conn:
        ssl, version = conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert ssl is True and version in ("TLSv1.2", "TLSv1.3")


def test_clear_text_on_loopback_is_refused_too(app_db, target):
    # no password is involved (-w: never prompt): pg_hba decides before authentication
    r = target.run("psql -X -At -w 'host=127.0.0.1 dbname=postgres sslmode=disable' -c 'SELECT 1'", user="postgres", check=False,
                   timeout=30)
    assert r.exit_code != 0 and "no encryption" in r.stderr, r.stderr
    r = target.run("psql -X -At -w 'host=127.0.0.1 dbname=postgres sslmode=require' -c 'SELECT 1'", user="postgres", check=False,
                   timeout=30)
    assert "no encryption" not in r.stderr and "password" in r.stderr  # admitted to authentication over TLS


def test_app_path_checks_report_the_tls_session(app_db):
    from trackerdb.cutover.phases import app_path_check
    from trackerdb.migrate.verify import app_login_check

    check = app_login_check(app_db, {})
    assert check.ok, check.observed
    assert "TLSv1." in check.observed and "sslmode=require" in check.observed
    path = app_path_check(app_db, app_db.outputs["private_ip"])
    assert path["writable"] and path["tls"].startswith("TLSv1.")


# ---- the operator's certificate -------------------------------------------------------------

def _lab_ca_signed(ip: str, state) -> tuple[str, str]:
    """A server certificate for the target's address, signed by the lab's CA (as an operator's CA would)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_cert = x509.load_pem_x509_certificate((state / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((state / "ca.key").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "target.lab.internal")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


@pytest.fixture()
def operator_tls(app_db):
    """Settings with tls_secret_name/tls_ca_file, the secret stored in the lab's Secrets Manager.
    Afterwards the target goes back to the lab's default (snakeoil) and the secret is deleted."""
    from trackerdb.aws import client
    from trackerdb.provision.ops import provision
    from trackerdb.settings import lab_dir

    state = lab_dir()
    cert, key = _lab_ca_signed(app_db.outputs["private_ip"], state)
    name = f"tracker/db/tls-test-{uuid.uuid4().hex[:8]}"
    sm = client(app_db, "secretsmanager")
    sm.create_secret(Name=name, SecretString=json.dumps({"certificate": cert, "private_key": key}))
    try:
        yield app_db.with_(tls_secret_name=name, tls_ca_file=str(state / "ca.crt")), key
    finally:
        provision(app_db)
        sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)


def test_operator_certificate_installed_owner_only_and_verified(operator_tls, target):
    from trackerdb.migrate.verify import app_login_check
    from trackerdb.provision.ops import provision
    from trackerdb.tls import server_dir, server_files

    s, key = operator_tls
    # before: the lab's snakeoil certificate does not verify against the operator's CA
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(**_params(s, sslmode="verify-full", sslrootcert=s.tls_ca_file))

    out = provision(s)
    steps = {st.name: st for st in out.steps}
    assert steps["tls certificate"].changed and steps["server"].changed
    assert key.splitlines()[1] not in out.to_json()
    crt, keyfile = server_files(s)
    stat = target.run(["stat", "-c", "%n %U:%G %a", server_dir(s), keyfile, crt], sudo=True).stdout.split("\n")
    assert stat[:3] == [f"{server_dir(s)} postgres:postgres 700", f"{keyfile} postgres:postgres 600",
                        f"{crt} postgres:postgres 644"], stat
    assert psql(target, "SHOW ssl_cert_file;").stdout.strip() == crt

    # after: the server presents the operator's certificate, and it verifies (name = the address)
    with psycopg.connect(**_params(s, sslmode="verify-full", sslrootcert=s.tls_ca_file)) as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0] is True
    check = app_login_check(s, {})
    assert check.ok and "sslmode=verify-full" in check.observed, check.observed

    again = {st.name: st for st in provision(s).steps}
    assert not again["tls certificate"].changed


# ---- the role statement's logging -----------------------------------------------------------

def test_a_failed_alter_role_leaves_no_verifier_in_the_server_log(provisioned, target):
    """role_sql's session settings keep a failing statement's text (the verifier) out of the log;
    the same statement without them is logged with its text, so this test can tell the difference."""
    from trackerdb.provision import roles

    log = LOG.format(major=provisioned.postgres_major)
    missing = f"no_such_role_{uuid.uuid4().hex[:8]}"
    quiet = roles.scram_verifier("quiet-" + uuid.uuid4().hex)
    loud = roles.scram_verifier("loud-" + uuid.uuid4().hex)
    r = psql(target, roles.role_sql(missing, quiet, create=False), check=False)
    assert r.exit_code != 0 and "does not exist" in r.stderr
    r = psql(target, f"ALTER ROLE {roles.ident(missing)} WITH LOGIN PASSWORD '{loud}';\n", check=False)
    assert r.exit_code != 0
    target.run(f"pg_ctlcluster {provisioned.postgres_major} main reload", sudo=True)  # flushes nothing, but orders the log
    logged = target.run(["cat", log], sudo=True).stdout
    assert loud.split("$", 2)[2] in logged  # the control: PostgreSQL does log a failed statement's text
    assert quiet.split("$", 2)[2] not in logged
