"""Tasks for the infrastructure that `pulumi up` creates (infra/)."""

from __future__ import annotations

from invoke import task

from .. import infra_check
from .common import fail_unless, ops_task, print_checks, settings


@task(help={
    "json": "print the checks as JSON",
    "app_sgs": "comma-separated application security groups the stack allows on 5432 (appSecurityGroupIds)",
    "extra_egress": "comma-separated CIDR:PORT[/udp] egress the stack configures (extraEgress)",
})
@ops_task
def check(c, json=False, app_sgs="", extra_egress=""):
    """Compare the deployed host with the stack outputs and the runbook (read-only; exit 1 on any mismatch).

    Reads with boto3 (default credential chain, the stack's region): instance type, private IP, AZ,
    IMDSv2, both volumes (size/type/encryption/attachment/AZ), the instance profile and every policy
    of its role, every security-group rule (anything broader than declared fails), the backup bucket
    and the two secrets (described, never read).
    """
    s = settings(c)
    exp = infra_check.Expected(
        outputs=s.outputs,
        app_security_group_ids=tuple(x.strip() for x in app_sgs.split(",") if x.strip()),
        extra_egress=infra_check.parse_extra_egress(extra_egress),
    )
    facts = infra_check.gather(s)
    checks = infra_check.evaluate(facts, exp)
    ok = print_checks(f"infra check: {s.outputs['instance_id']} ({s.environment}, {s.region})", checks, json,
                      extra={"instance_id": s.outputs["instance_id"]})
    fail_unless(ok, f"{sum(not c.ok for c in checks)} infrastructure check(s) failed")


TASKS = [check]
