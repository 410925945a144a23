"""The instance's state file: what ``up`` created (PIDs with start times, loop device, subnet), for ``down``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trackerdb.settings import LAB_ROOT


class State:
    def __init__(self, name: str, root: str | Path = LAB_ROOT):
        self.name = name
        self.dir = Path(root) / name
        self.file = self.dir / "state.json"
        self.data: dict[str, Any] = (
            json.loads(self.file.read_text()) if self.file.is_file() else {"name": name, "pids": {}, "init": {}}
        )

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True))
        tmp.replace(self.file)

    def __getitem__(self, k):
        return self.data.get(k)

    def __setitem__(self, k, v):
        self.data[k] = v
        self.save()

    def add_pid(self, role: str, pid: int, start: str | None) -> None:
        self.data.setdefault("pids", {}).setdefault(role, []).append({"pid": pid, "start": start})
        self.save()

    def set_init(self, role: str, pid: int) -> None:
        self.data.setdefault("init", {})[role] = pid
        self.save()

    def init(self, role: str) -> int | None:
        return self.data.get("init", {}).get(role)

    def all_pids(self) -> list[tuple[int, str | None]]:
        return [(e["pid"], e.get("start")) for lst in self.data.get("pids", {}).values() for e in lst]
