"""Invoke entry point: thin wiring only. Each task's docstring is its --help text.

    invoke --list                 every task
    invoke --help provision       one task's flags
"""

from invoke import Collection

from trackerdb.cli import backrest, cutover, infra, lab, migrate, provision, rehearse

ns = Collection()
for module in (provision, migrate, cutover, rehearse):
    for t in module.TASKS:
        ns.add_task(t)
for name, module in (("infra", infra), ("lab", lab), ("backrest", backrest)):
    sub = Collection(name)
    for t in module.TASKS:
        sub.add_task(t)
    ns.add_collection(sub)
