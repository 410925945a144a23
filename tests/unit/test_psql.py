"""The one psql builder/executor and the one quoting module (pure, with a stand-in host)."""

import pytest

from trackerdb.errors import HostError
from trackerdb.psql import PIN, Psql, PsqlError, failing_statement, parse_json, psql_argv
from trackerdb.remote import Result
from trackerdb.secrets import Secret
from trackerdb.sql import ident, literal, qualified


class Host:
    """Records what Psql asks a host to run and answers with a fixed Result."""

    name = "target"

    def __init__(self, stdout="", stderr="", code=0, secrets=()):
        self.answer = (code, stdout, stderr)
        self.secrets = list(secrets)
        self.calls = []

    def run(self, cmd, **kw):
        self.calls.append((cmd, kw))
        code, out, err = self.answer
        return Result(" ".join(cmd), code, out, err)


@pytest.mark.parametrize("database, port, pg_bin, variables, want", [
    ("tracker", 5432, None, None, ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-p", "5432", "-d", "tracker"]),
    ("postgres", 5433, "/usr/lib/postgresql/17/bin", {"owner": "tracker"},
     ["/usr/lib/postgresql/17/bin/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-p", "5433", "-d", "postgres",
      "-v", "owner=tracker"]),
])
def test_argv_always_names_the_port(database, port, pg_bin, variables, want):
    assert psql_argv(database, port, pg_bin, variables) == want


def test_the_port_is_never_optional():
    with pytest.raises(TypeError):
        Psql(Host(), None)
    with pytest.raises(TypeError):
        psql_argv("tracker")  # noqa


def test_sql_goes_on_stdin_as_postgres_never_argv():
    h = Host("1\n")
    Psql(h, 5433).run("SELECT 'secret-ish';", "tracker")
    cmd, kw = h.calls[0]
    assert kw["stdin"] == PIN + "\nSELECT 'secret-ish';" and kw["user"] == "postgres"
    assert not any("secret-ish" in a for a in cmd) and cmd[cmd.index("-p") + 1] == "5433"


@pytest.mark.parametrize("stdout, expected", [
    ('{"a": 1}\n', {"a": 1}),
    ('SET\n[{"a": 1}, \n {"a": 2}]\n', [{"a": 1}, {"a": 2}]),  # json_agg: one element per line, after a SET tag
    ('SET\n\n{"a": 1}\n', {"a": 1}),
    ('{"a": 1}\n{"b": 2}\n', {"b": 2}),  # two documents: the last
    ("", None),
])
def test_json_reads_multiline_values(stdout, expected):
    assert parse_json(stdout) == expected
    assert Psql(Host(stdout), 5432).json("SELECT 1") == expected


def test_json_without_json_says_so_as_a_host_error():
    with pytest.raises(PsqlError, match="not JSON") as e:
        Psql(Host("ERROR-ish text\n"), 5433).json("SELECT 1")
    assert "5433" in e.value.hint


def test_value_is_the_last_line():
    assert Psql(Host("SET\n42\n"), 5432).value("SET x = 1; SELECT 42;") == "42"


def test_error_names_the_failing_statement_and_psqls_whole_error_with_secrets_masked():
    sql = "SET log_statement = 'none';\nALTER ROLE tracker PASSWORD 'hunter2';\nSELECT 1;\n"
    err = ('psql:<stdin>:3: ERROR:  role "tracker" does not exist\n'  # line 1 is the pin
           "HINT:  create it first\n")
    h = Host(stderr=err, code=3, secrets=[Secret("app", "hunter2")])
    with pytest.raises(PsqlError) as e:
        Psql(h, 5433).run(sql, "tracker")
    msg = e.value.one_line()
    assert isinstance(e.value, HostError)
    assert "ALTER ROLE tracker PASSWORD '***'" in msg and "hunter2" not in msg
    assert 'role "tracker" does not exist / HINT: create it first' in msg
    assert "port 5433" in msg and "database tracker" in msg


def test_error_without_a_line_number_names_the_first_statement():
    assert failing_statement("\n  SELECT broken;\nSELECT 2;", "psql: error: connection refused") == "SELECT broken;"


def test_an_unreachable_cluster_hints_at_the_port():
    h = Host(stderr='psql: error: connection to server on socket "/run/postgresql/.s.PGSQL.5433" failed: '
                    "No such file or directory\n", code=2)
    with pytest.raises(PsqlError) as e:
        Psql(h, 5433).run("SELECT 1;")
    assert "port 5433" in e.value.hint


def test_check_false_returns_the_result():
    assert not Psql(Host(code=3, stderr="ERROR: x"), 5432).run("SELECT x;", check=False).ok


@pytest.mark.parametrize("fn, value, want", [
    (ident, 'a"b', '"a""b"'),
    (ident, "Tracker", '"Tracker"'),
    (literal, "it's", "'it''s'"),
    (literal, "back\\slash", "'back\\slash'"),
])
def test_quoting(fn, value, want):
    assert fn(value) == want


def test_qualified():
    assert qualified("tracker", 'x"y') == '"tracker"."x""y"'


@pytest.mark.parametrize("fn", [ident, literal, lambda v: qualified("s", v)])
def test_nul_is_refused_the_same_way_everywhere(fn):
    with pytest.raises(ValueError, match="contains NUL"):
        fn("a\x00b")


def test_every_quoting_entry_point_is_the_same_function():
    from trackerdb.migrate import sqltext
    from trackerdb.provision import roles

    assert sqltext.ident is roles.ident is ident
    assert sqltext.literal is literal
