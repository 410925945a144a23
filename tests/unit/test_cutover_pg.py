import pytest

from trackerdb.cutover import pg


class _Out:
    def __init__(self, stdout):
        self.stdout = stdout

    def run(self, *args, **kwargs):
        return self


@pytest.mark.parametrize(
    "stdout, expected",
    [
        ('{"a": 1}\n', {"a": 1}),
        # json_agg prints one element per line, after the output of earlier statements
        ('SET\n[{"a": 1}, \n {"a": 2}]\n', [{"a": 1}, {"a": 2}]),
        ("", None),
    ],
)
def test_query_json_reads_multiline_values(stdout, expected):
    assert pg.query_json(_Out(stdout), "SELECT 1") == expected


def test_query_json_without_json_says_so():
    with pytest.raises(ValueError, match="no JSON"):
        pg.query_json(_Out("ERROR-ish text\n"), "SELECT 1")
