"""Invoke entry point: thin wiring only. Each task's docstring is its --help text.

    invoke --list                 every task
    invoke --help provision       one task's flags

The root collection is spelled out: top-level tasks are the runbook's steps, sub-collections group
the pgBackRest, infrastructure and lab tasks. `rehearse` (lab + production operations together) comes
from the rehearsal layer, the lab's tasks from the lab; the production package knows neither.
"""

from invoke import Collection

from lab import tasks as lab_tasks
from rehearsal import tasks as rehearsal_tasks
from trackerdb.cli import backrest, cutover, infra, migrate, provision, rehearse

ns = Collection(
    provision.provision,
    migrate.dump,
    migrate.restore,
    migrate.verify,
    migrate.prove_jobs,
    migrate.drop_kept_aside,
    cutover.cutover,
    cutover.cutover_phase,
    cutover.rollback,
    cutover.cutover_finish,
    rehearsal_tasks.rehearse,
    rehearse.signoff,
    Collection("backrest", backrest.setup, backrest.check, backrest.backup),
    Collection("infra", infra.check),
    Collection("lab", lab_tasks.up, lab_tasks.down, lab_tasks.status, lab_tasks.reboot, lab_tasks.engine16),
)
