"""Where the window compares content and what it is projected to cost (cutover --dry-run, the rehearsal report)."""

from trackerdb.cutover import content_cost as cc

GIB = 1024 ** 3


def test_the_full_path_costs_a_whole_read_inside_the_window_and_says_so():
    lo, hi = cc.projected_s("full", 11 * GIB)
    assert (lo, hi) == (213.0, 523.0)
    text = cc.line("full", 11 * GIB)
    assert text.startswith("content (verify, phase 5): FULL path") and "projected 3.5 min-8.7 min for 11.00 GiB" in text
    assert "the window's dump takes no digests" in text


def test_the_precopy_path_reads_tuple_versions_only():
    assert cc.projected_s("delta", 11 * GIB) == (37.0, 37.0)
    assert "pre-copy path" in cc.line("delta", 11 * GIB) and "projected 37 s for 11.00 GiB" in cc.line("delta", 11 * GIB)


def test_an_unknown_size_or_path_is_said_not_guessed():
    assert "size unknown" in cc.line("full", None) and "cost unknown" in cc.line("full", None)
    assert "decided after the freeze" in cc.line(None, 2 * GIB)
