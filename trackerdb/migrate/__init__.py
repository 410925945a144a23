"""Move the tracker database by logical dump (runbook §3) and prove nothing was lost (§4, §6).

- ``manifest``: SQL facts about a database (pure query builders + parsers) and the manifest JSON.
- ``psql``: run SQL on a host through psql as postgres, JSON out.
- ``dump``: ``pg_dump`` on the source in one snapshot with the manifest.
- ``restore``: preflight, resumable upload, staging restore, rename into place.
- ``verify``: the checks that decide a cutover.
"""
