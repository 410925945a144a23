"""What one restore works on: where the dump is (``DumpSource``), what was asked (``RestoreOptions``) and
what the stages learn and hand on (``RestoreCtx``). ``restore.py`` runs the stages in order over one context."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..steps import Outcome
from . import toc

if TYPE_CHECKING:
    from ..settings import Settings


@dataclass(frozen=True)
class LocalDump:
    """The dump is a file here: it is checked here and uploaded (resumably) to the target."""
    path: Path


@dataclass(frozen=True)
class DumpOnTarget:
    """The dump is already on the target where the upload would put it (the direct transfer pulled it
    there): it is checked there against the manifest, and nothing is uploaded."""
    path: str


DumpSource = LocalDump | DumpOnTarget


def dump_source(path: str | Path, on_target: bool = False) -> DumpSource:
    return DumpOnTarget(str(path)) if on_target else LocalDump(Path(path))


@dataclass(frozen=True)
class RestoreOptions:
    replace: bool = False  # a live ``tracker`` is renamed aside (never dropped); without it, refused
    dry_run: bool = False  # preflight only, then the plan
    keep_upload: bool = False  # leave the uploaded dump on the target afterwards


class RestoreOutcome(Outcome):
    """The restore's steps, and its figures (``stats``: uploaded bytes, warnings, the restore job)."""

    def __init__(self, title: str, dry_run: bool = False):
        super().__init__(title, dry_run=dry_run)
        self.stats: dict[str, Any] = {"uploaded_bytes": 0, "warnings": []}


Say = Callable[..., Any]  # ``say(phase, done, total)``


@dataclass
class RestoreCtx:
    """Filled stage by stage: the local check sets the manifest, size and SHA-256; the target preflight
    the host, the target's facts and the plan for its databases; the later stages read them."""
    settings: Settings
    source: DumpSource
    opts: RestoreOptions
    out: RestoreOutcome
    say: Say
    manifest_path: str | None = None  # as given (None: beside a local dump)
    manifest_file: str = ""  # the manifest read (``check_dump``)
    manifest: dict = field(default_factory=dict)
    size: int = 0
    sha: str = ""
    t: Any = None  # the target's Remote
    psql: Any = None  # the target's Psql
    tf: dict = field(default_factory=dict)  # TARGET_FACTS_SQL
    dbplan: dict = field(default_factory=dict)  # check_databases
    split: toc.TocSplit | None = None
    remote_dump: str = ""
    uploaded: int = 0  # bytes already on the target (a resumed upload)
    ready: bool = False  # the staging database is complete already
    attach: bool = False  # a restore job for this dump runs on the target: attach to it
    nproc: int = 1  # the target's CPUs (pg_restore's and ANALYZE's parallelism)

    @property
    def on_target(self) -> bool:
        return isinstance(self.source, DumpOnTarget)

    @property
    def db(self) -> str:
        return str(self.settings.database)
