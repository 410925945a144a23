"""Move the tracker database by logical dump (runbook §3) and prove nothing was lost (§4, §6).

- ``manifest``: SQL facts about a database (pure query builders + parsers) and the manifest JSON.
- ``dump``: ``pg_dump`` on the source in one snapshot with the manifest.
- ``restore``: resumable upload, staging restore, rename into place; ``restore_plan``: its names,
  tuning, refusals and the read-only preflights.
- ``verify``: the checks that decide a cutover.

SQL runs through ``trackerdb.psql.Psql``; streams and uploads are ``trackerdb.remote.Remote`` methods.
"""
