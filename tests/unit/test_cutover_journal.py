"""Journal: records, fold, resume decisions, torn lines, secrets never written."""

import json

import pytest

from trackerdb.cutover.journal import RESUME, RUN, SKIP, Journal, decide, fold, scrub
from trackerdb.errors import OpsError
from trackerdb.secrets import Secret

PHASES = ["preflight", "freeze", "dump", "restore", "verify", "switch", "post"]


def rec(phase, event, outcome="started", t=0.0, **facts):
    return {"phase": phase, "event": event, "start": t, "end": t if event == "end" else None, "outcome": outcome, "facts": facts}


@pytest.mark.parametrize("records, expected", [
    ([], [RUN] * 7),
    ([rec("preflight", "begin"), rec("preflight", "end", "ok")], [SKIP] + [RUN] * 6),
    # killed inside a destructive phase: resumed, never skipped, never re-run from scratch blindly
    ([rec("preflight", "begin"), rec("preflight", "end", "ok"), rec("freeze", "begin")], [SKIP, RESUME] + [RUN] * 5),
    ([rec("preflight", "begin"), rec("preflight", "end", "ok"), rec("freeze", "begin"), rec("freeze", "end", "failed")],
     [SKIP, RESUME] + [RUN] * 5),
    # a failed attempt followed by a successful one is done
    ([rec("preflight", "begin"), rec("preflight", "end", "failed"), rec("preflight", "begin"), rec("preflight", "end", "ok")],
     [SKIP] + [RUN] * 6),
    # a later attempt that began again after success (should not happen) is resumed, not skipped
    ([rec(p, "begin") for p in PHASES[:1]] + [rec("preflight", "end", "ok")] + [rec("freeze", "begin"), rec("freeze", "end", "ok"),
     rec("dump", "begin"), rec("dump", "end", "ok"), rec("restore", "begin"), rec("restore", "note", x=1)],
     [SKIP, SKIP, SKIP, RESUME, RUN, RUN, RUN]),
    ([r for p in PHASES for r in (rec(p, "begin"), rec(p, "end", "ok"))], [SKIP] * 7),
])
def test_decide(records, expected):
    assert [a for _, a in decide(PHASES, fold(records))] == expected


def test_decide_refuses_a_gap():
    records = [rec("preflight", "begin"), rec("dump", "begin"), rec("dump", "end", "ok")]
    with pytest.raises(OpsError, match="earlier phase 'preflight'"):
        decide(PHASES, fold(records))


def test_fold_merges_facts_and_keeps_first_start():
    st = fold([rec("switch", "begin", t=10.0, old="10.0.0.1"), rec("switch", "note", t=11.0, new="10.0.0.2"),
               rec("switch", "end", "failed", t=12.0), rec("switch", "begin", t=20.0), rec("switch", "end", "ok", t=25.0, insync=True)])["switch"]
    assert st.done and st.attempts == 2
    assert st.start == 10.0 and st.last_start == 20.0 and st.end == 25.0
    assert st.facts == {"old": "10.0.0.1", "new": "10.0.0.2", "insync": True}


def test_journal_roundtrip_and_torn_last_line(tmp_path):
    t = iter(range(100, 200))
    j = Journal(tmp_path / "j.jsonl", clock=lambda: float(next(t)))
    j.begin("preflight")
    j.end("preflight", facts={"checks": 3})
    j.begin("freeze", {"grace_s": 15})
    with open(j.path, "a") as f:
        f.write('{"phase": "freeze", "ev')  # killed mid-write
    states = j.states()
    assert states["preflight"].done and states["preflight"].elapsed == 1.0
    assert states["freeze"].status == "started" and states["freeze"].facts == {"grace_s": 15}
    assert oct(j.path.stat().st_mode & 0o777) == "0o600"
    # appending after a torn line drops the torn record (it never completed) and stays readable
    j.end("freeze", facts={"lsn": "0/1"})
    states = j.states()
    assert states["freeze"].done and states["freeze"].facts == {"grace_s": 15, "lsn": "0/1"}
    assert len(j.records()) == 4


def test_damaged_middle_line_is_refused(tmp_path):
    p = tmp_path / "j.jsonl"
    p.write_text('not json\n{"phase": "preflight", "event": "begin"}\n')
    with pytest.raises(OpsError, match="line 1 is not JSON"):
        Journal(p).records()


def test_secrets_never_written(tmp_path):
    pw = "s3cr3t-Pa55"
    j = Journal(tmp_path / "j.jsonl", secrets=(pw,))
    j.begin("restore", {"password": "x", "dsn": f"postgresql://tracker:{pw}@h/tracker", "app": Secret("n", pw),
                        "nested": [{"cipher_pass": "abc"}], "ok_key": "value"})
    text = j.path.read_text()
    assert pw not in text and '"x"' not in text and "abc" not in text
    facts = json.loads(text)["facts"]
    assert facts["ok_key"] == "value" and facts["dsn"] == "postgresql://tracker:***@h/tracker"
    assert facts["password"] == "***" and facts["app"] == "***" and facts["nested"] == [{"cipher_pass": "***"}]


def test_scrub_keeps_plain_values():
    assert scrub({"a": 1, "b": [True, None, 2.5], "secret_name": None}) == {"a": 1, "b": [True, None, 2.5], "secret_name": None}


def test_the_cutover_registers_both_secrets_for_scrubbing(tmp_path):
    """Issue 11: the post phase runs a pgBackRest backup, so the cipher passphrase must be scrubbed from the
    journal as well as the application password, even inside an error text."""
    from trackerdb.cutover import ops
    from trackerdb.secrets import Secret

    values = {"app/pw": "app-Xy7-secret", "cipher/pw": "cipher-Qz9-secret"}

    class Sess:
        def secret(self, name):
            return Secret(name, values[name])

    class S:
        app_secret_name, cipher_secret_name = "app/pw", "cipher/pw"

    class Ctx:
        session = Sess()
        journal = Journal(tmp_path / "j.jsonl")

    ops._add_secrets(Ctx, S())
    Ctx.journal.begin("post")
    Ctx.journal.end("post", "failed", error=f"pgbackrest said {values['cipher/pw']} and {values['app/pw']}")
    text = (tmp_path / "j.jsonl").read_text()
    assert values["cipher/pw"] not in text and values["app/pw"] not in text and "***" in text
