import json

import pytest

from trackerdb.backrest import stanza
from trackerdb.errors import HostError, PreflightError

OURS, THEIRS = 7400000000000000001, 7300000000000000002


def info(repos, stanza_name="tracker-dedicated"):
    """repos: {key: (code, message, system_id|None, archive_max|None, backups)}"""
    entry = {"name": stanza_name, "repo": [], "db": [], "archive": [], "backup": [], "status": {"code": 0}}
    for key, (code, msg, sysid, amax, backups) in repos.items():
        entry["repo"].append({"key": key, "cipher": "aes-256-cbc", "status": {"code": code, "message": msg}})
        if sysid:
            entry["db"].append({"id": 1, "repo-key": key, "system-id": sysid, "version": "17"})
        if amax:
            entry["archive"].append({"database": {"id": 1, "repo-key": key}, "id": "17-1", "min": "000000010000000000000001", "max": amax})
        for label, astart in backups:
            entry["backup"].append({"label": label, "type": "full", "database": {"id": 1, "repo-key": key},
                                    "timestamp": {"start": 1, "stop": 2}, "archive": {"start": astart, "stop": astart},
                                    "info": {"size": 10, "repository": {"delta": 5}}})
    return json.dumps([entry])


ABSENT = (1, "missing stanza path", None, None, [])


def test_parse_info_reads_each_repository():
    facts = stanza.parse_info(info({2: ABSENT, 3: (0, "ok", OURS, "000000010000000000000005", [("20261121-000000F", "000000010000000000000003")])}), "tracker-dedicated")
    assert facts[2].state == "absent" and facts[2].system_id is None
    assert facts[3].state == "present" and facts[3].system_id == OURS
    assert facts[3].archive_max == "000000010000000000000005"
    assert facts[3].backups[0]["label"] == "20261121-000000F"


def test_current_db_is_the_newest_history_entry():
    data = json.loads(info({3: (0, "ok", OURS, None, [])}))
    data[0]["db"].insert(0, {"id": 0, "repo-key": 3, "system-id": THEIRS, "version": "16"})
    facts = stanza.parse_info(json.dumps(data), "tracker-dedicated")
    assert facts[3].system_id == OURS


@pytest.mark.parametrize("repos, todo", [
    ({2: ABSENT, 3: ABSENT}, [2, 3]),
    ({2: (2, "no valid backups", OURS, None, []), 3: ABSENT}, [3]),
    ({2: (0, "ok", OURS, None, []), 3: (2, "no valid backups", OURS, None, [])}, []),
])
def test_decide_creates_only_where_absent(repos, todo):
    assert stanza.decide(stanza.parse_info(info(repos), "tracker-dedicated"), OURS, "tracker-dedicated") == todo


@pytest.mark.parametrize("repos, fragment", [
    ({2: ABSENT, 3: (0, "ok", THEIRS, None, [])}, "belongs to another cluster"),
    ({2: (2, "no valid backups", THEIRS, None, []), 3: ABSENT}, "belongs to another cluster"),
    ({2: ABSENT, 3: (99, "[CryptoError] cipher header invalid", None, None, [])}, "cannot be read"),
    ({2: (3, "missing stanza data", None, None, []), 3: ABSENT}, "incomplete"),
])
def test_decide_refuses_anything_not_absent_or_ours(repos, fragment):
    with pytest.raises(PreflightError) as e:
        stanza.decide(stanza.parse_info(info(repos), "tracker-dedicated"), OURS, "tracker-dedicated")
    assert fragment in e.value.one_line()
    assert "stanza-upgrade" in e.value.one_line() or "choose another stanza" in e.value.one_line()


@pytest.mark.parametrize("msg", ["[HostConnectError] unable to connect", "[CryptoError] unable to set user-defined CA certificate location"])
def test_an_unreachable_repository_is_a_host_error_not_a_collision(msg):
    with pytest.raises(HostError) as e:
        stanza.decide(stanza.parse_info(info({2: (99, msg, None, None, []), 3: ABSENT}), "tracker-dedicated"), OURS, "tracker-dedicated")
    assert not isinstance(e.value, PreflightError) and "nothing was changed" in e.value.one_line()


def test_decide_requires_both_repositories():
    with pytest.raises(HostError):
        stanza.decide(stanza.parse_info(info({3: ABSENT}), "tracker-dedicated"), OURS, "tracker-dedicated")


def test_parse_info_without_json_or_stanza_is_an_error():
    with pytest.raises(HostError):
        stanza.parse_info("ERROR: [056]: unable to ...", "x")
    with pytest.raises(HostError):
        stanza.parse_info(info({2: ABSENT}, "other"), "tracker-dedicated")


def test_parse_controldata():
    text = "pg_control version number:            1700\nDatabase system identifier:           7400000000000000001\n"
    assert stanza.parse_controldata(text) == OURS


def test_env_run_keeps_values_off_argv():
    line = stanza.env_run(stanza.info_argv())
    assert "PGBACKREST" not in line and "pgbackrest --output=json info" in line


def test_a_stanza_readable_only_without_our_cipher_is_refused_with_its_system_id():
    facts = stanza.parse_info(info({2: ABSENT, 3: (0, "ok", THEIRS, None, [])}), "tracker-dedicated")
    facts[3].cipher_mismatch = True
    with pytest.raises(PreflightError) as e:
        stanza.decide(facts, OURS, "tracker-dedicated")
    assert "other encryption settings" in e.value.one_line() and str(THEIRS) in e.value.one_line()


@pytest.mark.parametrize("code, msg, yes", [
    (99, "[CryptoError] cipher header invalid", True),
    (99, "[CryptoError] unable to set user-defined CA certificate location", False),
    (99, "unable to load info file: HINT: is or was the repo encrypted?", True),
    (99, "[HostConnectError] unable to connect", False),
    (1, "missing stanza path", False),
])
def test_cipher_errors_get_a_second_look(code, msg, yes):
    assert stanza.looks_like_cipher_error(stanza.RepoFact(3, code, msg)) is yes
