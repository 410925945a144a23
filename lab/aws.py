"""The `aws` host: moto in server mode on 127.0.0.1 inside its network namespace, nginx TLS on <aws ip>:443,
a lab CA, and the seeded resources (bucket, secrets, Route53 zone and record)."""

from __future__ import annotations

import os
import secrets as _secrets
import subprocess
import sys
import time
from pathlib import Path

from . import render
from .naming import AWS_NAME, Names
from .outputs import APP_SECRET, BUCKET, CIPHER_SECRET, MOTO_KEYS, RECORD, REGION, ZONE
from .state import State
from .util import LabError, proc_start_time, run

MOTO_PORT = 5000
# pgBackRest talks path-style to "aws.lab.internal"; without this moto would take "aws" for a bucket name
MOTO_ENV = dict(os.environ, S3_IGNORE_SUBDOMAIN_BUCKETNAME="true")


def make_ca(d: Path, ip: str) -> None:
    """A lab CA (ca.crt/ca.key) and a server cert for nginx with SANs for the aws name and IP."""
    d.mkdir(parents=True, exist_ok=True)
    run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=trackerdb lab CA",
            "-keyout",
            str(d / "ca.key"),
            "-out",
            str(d / "ca.crt"),
        ]
    )
    run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-subj", f"/CN={AWS_NAME}", "-keyout", str(d / "aws" / "server.key"), "-out", str(d / "aws" / "server.csr")])
    (d / "aws" / "server.ext").write_text(render.server_cert_ext(ip))
    run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            str(d / "aws" / "server.csr"),
            "-CA",
            str(d / "ca.crt"),
            "-CAkey",
            str(d / "ca.key"),
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            str(d / "aws" / "server.ext"),
            "-out",
            str(d / "aws" / "server.crt"),
        ]
    )
    (d / "ca.key").chmod(0o600)


def _nginx_cmd(st: State, n: Names) -> list[str]:
    aws = st.dir / "aws"
    return [
        "ip",
        "netns",
        "exec",
        n.netns("aws"),
        "nginx",
        "-c",
        str(aws / "nginx.conf"),
        "-e",
        str(aws / "nginx-error.log"),
        "-g",
        "daemon off;",
    ]


def _spawn(st: State, label: str, cmd: list[str]) -> int:
    log = open(st.dir / "aws" / f"{label}.log", "ab")
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, env=MOTO_ENV)
    st.add_pid("aws", p.pid, proc_start_time(p.pid))
    return p.pid


def start(st: State, n: Names) -> None:
    aws = st.dir / "aws"
    aws.mkdir(parents=True, exist_ok=True)
    (aws / "nginx.conf").write_text(render.nginx_conf(str(aws), n.ip("aws"), f"127.0.0.1:{MOTO_PORT}"))
    moto = str(Path(sys.executable).with_name("moto_server"))
    _spawn(st, "moto", ["ip", "netns", "exec", n.netns("aws"), moto, "-H", "127.0.0.1", "-p", str(MOTO_PORT)])
    _spawn(st, "nginx", _nginx_cmd(st, n))


def front_pids(st: State) -> list[int]:
    """The running TLS front's (nginx master's) PIDs among this instance's aws processes (moto's are not)."""
    found = []
    for e in (st.data.get("pids") or {}).get("aws", []):
        pid = e["pid"]
        try:  # nginx rewrites its title ("nginx: master process nginx -c …"): match the bytes, not argv[0]
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if cmd.startswith(b"nginx") and proc_start_time(pid) == e.get("start"):
            found.append(pid)
    return found


def kill_front(st: State) -> list[int]:
    """SIGKILL the TLS front's process group (master and workers: a worker outliving its master keeps
    serving): the AWS APIs refuse connections; moto, behind it, keeps its state. Returns the PIDs killed."""
    import signal

    pids = front_pids(st)
    for pid in pids:
        os.killpg(pid, signal.SIGKILL)  # started with its own session: its group is its PID
    deadline = time.monotonic() + 10
    while front_pids(st) and time.monotonic() < deadline:
        time.sleep(0.05)
    return pids


def restart_front(st: State, n: Names) -> int:
    """The TLS front started again (after ``kill_front``), answering before this returns."""
    pid = _spawn(st, "nginx", _nginx_cmd(st, n))
    wait_ready(st, n)
    return pid


def client(st: State, n: Names, service: str):
    import boto3

    return boto3.session.Session().client(
        service, region_name=REGION, endpoint_url=f"https://{n.ip('aws')}", verify=str(st.dir / "ca.crt"),
        aws_access_key_id=MOTO_KEYS["access_key_id"], aws_secret_access_key=MOTO_KEYS["secret_access_key"])


def wait_ready(st: State, n: Names, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            client(st, n, "s3").list_buckets()
            return
        except Exception as exc:  # connection refused / 502 until moto is up
            last = exc
            time.sleep(0.2)
    raise LabError(f"aws: moto behind nginx did not answer on https://{n.ip('aws')} ({type(last).__name__})",
                   hint=f"see {st.dir}/aws/moto.log and nginx-error.log")


def seed(st: State, n: Names) -> dict:
    """Bucket, the two secrets (random, never printed), the hosted zone and the app record. Returns {zone_id}."""
    s3 = client(st, n, "s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    sm = client(st, n, "secretsmanager")
    sm.create_secret(Name=CIPHER_SECRET, SecretString=_secrets.token_urlsafe(48))
    sm.create_secret(Name=APP_SECRET, SecretString=_secrets.token_urlsafe(24))
    r53 = client(st, n, "route53")
    zone = r53.create_hosted_zone(Name=ZONE, CallerReference=f"lab-{n.name}-{time.time()}")["HostedZone"]["Id"]
    zone_id = zone.split("/")[-1]
    r53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [{
        "Action": "UPSERT",
        "ResourceRecordSet": {"Name": RECORD, "Type": "A", "TTL": 5, "ResourceRecords": [{"Value": n.ip("source")}]}}]})
    return {"zone_id": zone_id}
