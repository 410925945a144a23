"""psql now lives in ``trackerdb.psql``.

# alias kept for in-flight branches; remove after merge
"""

from __future__ import annotations

from ..psql import Psql, parse_json, psql_argv  # noqa: F401  (alias kept for in-flight branches; remove after merge)

psql_cmd = psql_argv  # alias kept for in-flight branches; remove after merge
parse_json_output = parse_json  # alias kept for in-flight branches; remove after merge
