"""The role's S3 policy, evaluated request by request: everything pgBackRest does for our stanza is
allowed; nothing can touch (or list into) the shared host's ``tracker`` stanza under the same prefix.

OBSERVED is the set of distinct S3 requests pgBackRest 2.55 made in a lab run (stanza-create, check,
archive-push, full backup, info), read from the lab's TLS proxy access log, normalised (WAL segment
names and backup labels replaced by one real example each).
"""

from __future__ import annotations

import pytest

from infra.iam import s3_policy, secrets_policy
from trackerdb.iam_eval import Request, allowed, s3_request

BUCKET, PREFIX, OURS, SHARED = "glimpse-timescale-backups", "pgbackrest", "tracker-dedicated", "tracker"
SEG = "000000010000000000000003-6f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c"
LABEL = "20261201-083512F"

OBSERVED = [
    ("GET", "pgbackrest/archive/tracker-dedicated/archive.info"),
    ("HEAD", "pgbackrest/backup/tracker-dedicated/backup.info"),
    ("PUT", "pgbackrest/archive/tracker-dedicated/archive.info"),
    ("PUT", "pgbackrest/archive/tracker-dedicated/archive.info.copy"),
    ("PUT", "pgbackrest/backup/tracker-dedicated/backup.info"),
    ("PUT", "pgbackrest/backup/tracker-dedicated/backup.info.copy"),
    ("PUT", f"pgbackrest/archive/tracker-dedicated/17-1/0000000100000000/{SEG}.zst"),
    ("GET", f"pgbackrest/archive/tracker-dedicated/17-1/0000000100000000/{SEG}.zst"),
    ("PUT", f"pgbackrest/backup/tracker-dedicated/{LABEL}/pg_data/base/5/2838.zst"),
    ("PUT", f"pgbackrest/backup/tracker-dedicated/{LABEL}/backup.manifest.copy"),
    ("HEAD", f"pgbackrest/backup/tracker-dedicated/{LABEL}/backup.manifest"),
    ("PUT", f"pgbackrest/backup/tracker-dedicated/backup.history/2026/{LABEL}.manifest.gz"),
    ("DELETE", "pgbackrest/backup/tracker-dedicated/latest"),
    ("GET", "?delimiter=%2F&list-type=2&prefix=pgbackrest%2Fbackup%2F"),
    ("GET", "?delimiter=%2F&list-type=2&prefix=pgbackrest%2Fbackup%2Ftracker-dedicated%2F"),
    ("GET", "?delimiter=%2F&list-type=2&prefix=pgbackrest%2Fbackup%2Ftracker-dedicated%2Fbackup.history%2F2"),
    ("GET", "?delimiter=%2F&list-type=2&prefix=pgbackrest%2Farchive%2Ftracker-dedicated%2F17-1%2F"),
    ("GET", "?delimiter=%2F&list-type=2&prefix=pgbackrest%2Farchive%2Ftracker-dedicated%2F17-1%2F0000000100000000%2F"),
    ("GET", "?delimiter=%2F&list-type=2&prefix=pgbackrest%2Farchive%2Ftracker-dedicated%2F17-1%2F0000000100000000%2F000000010000000000000003"),
]

# what a compromised or misconfigured host must not be able to do to the shared stanza
FORBIDDEN = [
    ("DELETE", "pgbackrest/backup/tracker/backup.info"),
    ("DELETE", "pgbackrest/archive/tracker/archive.info"),
    ("DELETE", f"pgbackrest/archive/tracker/16-1/0000000100000A2B/{SEG}.zst"),
    ("PUT", "pgbackrest/backup/tracker/backup.info"),
    ("GET", "pgbackrest/backup/tracker/20250101-000000F/backup.manifest"),
    ("PUT", "pgbackrest/archive/tracker-dedicated-evil/archive.info"),  # a sibling sharing our name as a prefix
    ("PUT", "pgbackrest/archive.info"),
    ("GET", "?delimiter=%2F&list-type=2&prefix=pgbackrest%2Farchive%2Ftracker%2F"),
    ("GET", "?list-type=2&prefix=pgbackrest%2Fbackup%2F"),  # recursive: every file name of every stanza
    ("GET", "?list-type=2&prefix=pgbackrest%2F"),
    ("GET", "?list-type=2"),
]

# The form the issue found deployed: Get/Put/Delete on the whole repo2 prefix.
WIDE = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{BUCKET}",
     "Condition": {"StringLike": {"s3:prefix": [f"{PREFIX}/*"]}}},
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], "Resource": f"arn:aws:s3:::{BUCKET}/{PREFIX}/*"},
]}


def _statements() -> list[dict]:
    return s3_policy(BUCKET, PREFIX, OURS)["Statement"]


@pytest.mark.parametrize("method,path", OBSERVED)
def test_everything_pgbackrest_did_for_our_stanza_is_allowed(method, path):
    assert allowed(_statements(), s3_request(method, BUCKET, path))


@pytest.mark.parametrize("method,path", FORBIDDEN)
def test_nothing_reaches_the_shared_stanza(method, path):
    assert not allowed(_statements(), s3_request(method, BUCKET, path))


def test_the_wide_form_would_let_the_host_delete_the_shared_history():
    # the evaluator is not vacuous: the old policy allows what the new one refuses
    assert allowed(WIDE["Statement"], s3_request("DELETE", BUCKET, "pgbackrest/backup/tracker/backup.info"))
    assert allowed(WIDE["Statement"], s3_request("GET", BUCKET, "?list-type=2&prefix=pgbackrest%2Fbackup%2F"))


def test_evaluator_conditions_need_the_request_key():
    # ListStanzaNames demands delimiter=/ : without it (recursive listing) IAM does not match
    st = _statements()
    assert allowed(st, Request("s3:ListBucket", f"arn:aws:s3:::{BUCKET}", {"s3:prefix": "pgbackrest/backup/", "s3:delimiter": "/"}))
    assert not allowed(st, Request("s3:ListBucket", f"arn:aws:s3:::{BUCKET}", {"s3:prefix": "pgbackrest/backup/"}))


def test_secrets_policy_names_only_what_it_is_given():
    [st] = secrets_policy(["arn:aws:secretsmanager:eu-west-2:1:secret:c-AbC"])["Statement"]
    assert allowed([st], Request("secretsmanager:GetSecretValue", "arn:aws:secretsmanager:eu-west-2:1:secret:c-AbC"))
    assert not allowed([st], Request("secretsmanager:GetSecretValue", "arn:aws:secretsmanager:eu-west-2:1:secret:tracker/db/tracker-password-DeF"))
