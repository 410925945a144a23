"""tasks.py's root Collection: every task once, under the names the runbook and README use."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_ns():
    spec = importlib.util.spec_from_file_location("tasks_under_test", ROOT / "tasks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.ns


def test_root_collection_names_every_task():
    ns = load_ns()
    assert set(ns.task_names) == {
        "provision", "dump", "restore", "verify", "prove-jobs", "drop-kept-aside", "cutover", "cutover-phase", "rollback", "cutover-finish", "rehearse", "signoff",
        "backrest.setup", "backrest.check", "backrest.backup", "infra.check",
        "lab.up", "lab.down", "lab.status", "lab.reboot", "lab.engine16"}


def test_each_module_lists_the_tasks_the_root_uses():
    """A task added to a module's TASKS but not to tasks.py would be unreachable: catch it here."""
    from lab import tasks as lab_tasks
    from rehearsal import tasks as rehearsal_tasks
    from trackerdb.cli import backrest, cutover, infra, migrate, provision, rehearse

    wired = {t.body for t in load_ns().tasks.values()} | {
        t.body for c in load_ns().collections.values() for t in c.tasks.values()}
    for module in (provision, migrate, cutover, rehearse, backrest, infra, lab_tasks, rehearsal_tasks):
        for t in module.TASKS:
            assert t.body in wired, f"{module.__name__}.{t.name} is not in tasks.py"
