"""The report's lab-vs-production version header (pure)."""

from trackerdb.rehearse import versions as v


def test_production_versions_come_from_the_production_stack():
    prod = v.production_versions(v.PROD_STACK.read_text())
    assert prod == {"postgres_major": "16", "timescaledb": "2.18.2", "postgis": "3.5.2"}


def test_each_version_is_marked_match_expected_deviation_or_deviation():
    rows = {r["name"]: r for r in v.version_rows({"postgres_major": 17, "timescaledb": "2.18.2", "postgis": "3.5.2"},
                                                 {"postgres_major": "16", "timescaledb": "2.18.2", "postgis": "3.5.2"})}
    assert rows["TimescaleDB"]["status"] == "match" and rows["PostGIS"]["status"] == "match"
    assert rows["PostgreSQL major"]["status"] == "expected deviation" and "16 cannot be had" in rows["PostgreSQL major"]["note"]
    bad = {r["name"]: r for r in v.version_rows({"postgres_major": 16, "timescaledb": "2.19.3", "postgis": "3.5.2"},
                                                {"postgres_major": "16", "timescaledb": "2.18.2", "postgis": "3.5.2"})}
    assert bad["TimescaleDB"]["status"] == "DEVIATION" and bad["PostgreSQL major"]["status"] == "match"


def test_the_report_header_shows_the_versions_and_a_deviation_fails_it():
    import copy

    from trackerdb.rehearse import report as R
    from trackerdb.rehearse.report_html import render_html
    from trackerdb.rehearse.sample import T0, sample_result

    res = copy.deepcopy(sample_result())
    res["meta"]["versions"] = v.version_rows({"postgres_major": 17, "timescaledb": "2.18.2", "postgis": "3.5.2"},
                                             {"postgres_major": "16", "timescaledb": "2.18.2", "postgis": "3.5.2"})
    rep = R.build_report(res, generated_at=T0)
    assert rep["verdict"] == "PASS"  # the PostgreSQL major is the one expected deviation
    html = render_html(rep)
    assert "<td>PostgreSQL major</td><td>17</td><td>16</td><td class=\"muted\">expected deviation</td>" in html
    assert "<td>TimescaleDB</td><td>2.18.2</td><td>2.18.2</td><td class=\"ok\">match</td>" in html
    res["meta"]["versions"][1].update(lab="2.19.3", status="DEVIATION")
    rep = R.build_report(res, generated_at=T0)
    assert rep["verdict"] == "FAIL" and "version TimescaleDB: lab 2.19.3 != production 2.18.2" in rep["failures"]
