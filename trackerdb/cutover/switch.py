"""Point the application at a database host: a Route53 record (boto3) or an operator's command.

Both modes have the same shape: ``current()`` reads what the application uses now, ``apply(old,
new)`` changes it and waits until clients see it. The journal records old and new *before* the
change, so a re-run or a rollback never mistakes the new value for the old one.

Route53: UPSERT keeps the record's type and TTL; we wait for the change to be INSYNC and then wait
out the TTL, after which no resolver may still hand out the old address.
Command: ``settings.switch.command`` with ``{old}`` and ``{new}`` placeholders (shell-quoted),
run locally; it must be idempotent (it runs again on resume and, swapped, on rollback). Only those
two are substituted: any other brace (JSON, ``${VAR}``, ``{a,b}``) reaches the shell as written,
and a ``{word}`` that looks like a mistyped placeholder is refused when the config is read.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from typing import TYPE_CHECKING, Any, Callable, Protocol

from ..errors import ConfigError, OpsError
from ..progress import Say
from ..window_config import check_template

if TYPE_CHECKING:
    from ..session import Session
    from ..settings import Settings


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


def new_value(settings: Settings) -> str:
    """What the application should use after the cutover: ``switch.new`` or the target's address."""
    return str(settings.switch.new or settings.target.address)


def old_value_hint(settings: Settings) -> str | None:
    return settings.switch.old or (settings.source.address if settings.source else None)


class Switcher(Protocol):
    """What the cutover and the rollback use of a switch, whichever its mode."""

    mode: str

    def describe(self) -> str: ...

    def current(self) -> str: ...

    def apply(self, old: str, new: str, progress: Say | None = None) -> dict[str, Any]: ...


def of(session: Session) -> Switcher:
    """The session's switcher, built once (a boto3 client per task, whatever the phases that use it)."""
    if session.switcher is None:
        session.switcher = make(session.settings)
    return session.switcher


def make(settings: Settings, sleep: Callable[[float], None] = time.sleep,
         clock: Callable[[], float] = time.monotonic) -> Switcher:
    """The switch ``settings.switch.mode`` names (the mode was checked when the settings loaded)."""
    if settings.switch.mode == "command":
        return CommandSwitch(settings)
    return Route53Switch(settings, sleep=sleep, clock=clock)


class Route53Switch:
    mode = "route53"

    def __init__(self, settings: Settings, client: Any = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, poll_s: float = 2.0, timeout_s: float = 600):
        sw = settings.switch
        if not sw.zone_id or not sw.record_name:
            raise ConfigError("switch.mode is route53 but zone_id or record_name is not set",
                              hint="set trackerdb.switch.zone_id and trackerdb.switch.record_name")
        self.zone_id: str = sw.zone_id
        self.name: str = sw.record_name
        self.settings = settings
        self._client = client
        self.sleep, self.clock, self.poll_s, self.timeout_s = sleep, clock, poll_s, timeout_s
        self.ttl_wait = sw.ttl_wait

    @property
    def client(self) -> Any:
        if self._client is None:
            from ..aws import client

            self._client = client(self.settings, "route53")
        return self._client

    def describe(self) -> str:
        return f"Route53 record {self.name} in zone {self.zone_id}"

    def record(self) -> dict[str, Any]:
        """The record set as Route53 has it now (type, TTL, values)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self.client.list_resource_record_sets(HostedZoneId=self.zone_id, StartRecordName=_fqdn(self.name),
                                                         MaxItems="10")
        except (ClientError, BotoCoreError) as exc:
            raise OpsError(f"cannot read {self.describe()}: {type(exc).__name__}",
                           hint="check AWS credentials, the zone id and route53:ListResourceRecordSets") from None
        for rs in resp.get("ResourceRecordSets", []):
            if rs["Name"].rstrip(".").lower() == self.name.rstrip(".").lower() and rs["Type"] in ("A", "AAAA", "CNAME"):
                if "AliasTarget" in rs:
                    raise OpsError(f"{self.describe()} is an alias record",
                                   hint="use switch.mode=command for alias records")
                return {"type": rs["Type"], "ttl": int(rs.get("TTL", 0)),
                        "values": [r["Value"] for r in rs.get("ResourceRecords", [])]}
        raise OpsError(f"{self.describe()} does not exist",
                       hint="create it pointing at the old host, or fix switch.record_name")

    def _call(self, what: str, fn: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        """One Route53 write or poll; the API failing (refused, unreachable, throttled) is one line. A single-value
        UPSERT is atomic: the record is either the old value or the new one, and a re-run reads which."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise OpsError(f"cannot {what}: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
                           hint="the record holds one value, old or new, never half; re-run once the Route53 API "
                                "answers (the switch resumes and reads which)") from None

    def current(self) -> str:
        rec = self.record()
        values = rec["values"]
        if len(values) != 1:
            raise OpsError(f"{self.describe()} has {len(values)} values {values}",
                           hint="the switch expects exactly one address")
        return str(values[0])

    def change_batch(self, rec: dict[str, Any], value: str, comment: str) -> dict[str, Any]:
        return {"Comment": comment, "Changes": [{"Action": "UPSERT", "ResourceRecordSet": {
            "Name": _fqdn(self.name), "Type": rec["type"], "TTL": rec["ttl"], "ResourceRecords": [{"Value": value}]}}]}

    def apply(self, old: str, new: str, progress: Say | None = None) -> dict[str, Any]:
        """Set the record to ``new`` (only if it is not already), wait INSYNC, then wait out the TTL."""
        rec = self.record()
        facts: dict[str, Any] = {"mode": self.mode, "record": self.name, "type": rec["type"], "ttl": rec["ttl"],
                                 "old": old, "new": new}
        now_value = rec["values"][0] if rec["values"] else None
        if now_value not in (old, new):
            raise OpsError(f"{self.describe()} is {now_value}, neither the recorded old value {old} nor the new {new}",
                           hint="someone changed it during the window; find out why before switching")
        if now_value != new:
            resp = self._call(f"change {self.describe()} to {new}", self.client.change_resource_record_sets,
                              HostedZoneId=self.zone_id,
                              ChangeBatch=self.change_batch(rec, new, f"trackerdb cutover: {old} -> {new}"))
            change_id = resp["ChangeInfo"]["Id"]
            facts["change_id"] = change_id
            deadline = self.clock() + self.timeout_s
            status = resp["ChangeInfo"]["Status"]
            while status != "INSYNC":
                if self.clock() > deadline:
                    raise OpsError(f"Route53 change {change_id} not INSYNC after {self.timeout_s:.0f}s",
                                   hint="re-run: the switch resumes and waits again")
                if progress:
                    progress(f"Route53 change {change_id} is {status}")
                self.sleep(self.poll_s)
                status = self._call(f"read Route53 change {change_id}", self.client.get_change,
                                    Id=change_id)["ChangeInfo"]["Status"]
            facts["changed"] = True
        else:
            facts["changed"] = False
        facts["insync_at"] = time.time()
        if self.ttl_wait and rec["ttl"] > 0:
            if progress:
                progress(f"waiting out the record's TTL ({rec['ttl']}s) so no resolver still answers {old}")
            self.sleep(rec["ttl"])
        facts["ttl_waited_s"] = rec["ttl"] if self.ttl_wait else 0
        observed = self.record()["values"]
        if observed != [new]:
            raise OpsError(f"{self.describe()} reads {observed} after the change, expected {new}",
                           hint="inspect the zone")
        return facts


def substitute(template: str, old: str, new: str) -> str:
    """``{old}``/``{new}`` -> shell-quoted values; nothing else in the template changes (one pass, so a
    value that itself contains ``{new}`` is not substituted again)."""
    values = {"{old}": shlex.quote(old), "{new}": shlex.quote(new)}
    return re.sub(r"{old}|{new}", lambda m: values[m.group(0)], template)


class CommandSwitch:
    mode = "command"

    def __init__(self, settings: Settings, runner: Callable[[str], tuple[int, str]] | None = None):
        self.template = check_template(settings.switch.command)
        self.settings = settings
        self.runner = runner or _run_local

    def describe(self) -> str:
        return f"command {self.template!r}"

    def current(self) -> str:
        old = old_value_hint(self.settings)
        if not old:
            raise ConfigError("switch.mode is command and the old value is unknown", hint="set trackerdb.switch.old")
        return old

    def command_line(self, old: str, new: str) -> str:
        return substitute(self.template, old, new)

    def apply(self, old: str, new: str, progress: Say | None = None) -> dict[str, Any]:
        line = self.command_line(old, new)
        if progress:
            progress(f"running switch command: {line}")
        code, tail = self.runner(line)
        if code != 0:
            raise OpsError(f"switch command exited {code}: {tail}",
                           hint="fix the command and re-run; it runs again on resume")
        return {"mode": self.mode, "command": line, "old": old, "new": new, "changed": True, "insync_at": time.time()}


def _run_local(line: str) -> tuple[int, str]:
    p = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=600)
    tail = (p.stderr.strip() or p.stdout.strip()).splitlines()[-1:] or [""]
    return p.returncode, tail[0][:300]
