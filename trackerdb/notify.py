"""Phase notifications to a webhook in Slack-compatible JSON (``{"text": …, "blocks": […]}``).

The webhook URL is a secret (it carries its token): config holds the *name* of a Secrets Manager
secret (``trackerdb.notify.webhook_secret_name``), fetched once per run, masked everywhere. Posting
is best effort: a webhook that is down, slow or refuses costs at most ``timeout_s`` and a warning
line, never the cutover.
"""

from __future__ import annotations

import json
import urllib.request
from urllib.parse import urlsplit

from .errors import ConfigError

ICONS = {"start": ":arrow_forward:", "ok": ":white_check_mark:", "failed": ":x:", "info": ":information_source:"}


# ---- pure builders ----------------------------------------------------------------------------

def message(phase: str, event: str, title: str, *, environment: str = "", error: str | None = None,
            rollback: str | None = None, elapsed_s: float | None = None) -> dict:
    """One phase event as a Slack-compatible payload (``text`` for every client, ``blocks`` for Slack)."""
    where = f" [{environment}]" if environment else ""
    head = {"start": "started", "ok": "done", "failed": "FAILED", "info": ""}.get(event, event)
    text = f"{ICONS.get(event, '')} trackerdb cutover{where}: {phase} {head}".rstrip()
    if elapsed_s is not None and event in ("ok", "failed"):
        text += f" after {elapsed_s:.1f}s"
    lines = [title] if title else []
    if error:
        lines.append(f"error: {' '.join(error.split())[:500]}")
    if rollback:
        lines.append(f"rollback: `{rollback}`")
    body = text + ("\n" + "\n".join(lines) if lines else "")
    return {"text": body,
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": body}}],
            # machine-readable copy for receivers that are not Slack
            "trackerdb": {"phase": phase, "event": event, "error": error, "rollback": rollback, "elapsed_s": elapsed_s}}


def check_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError("the notification webhook secret does not hold an http(s) URL",
                          hint="store the webhook URL (https://hooks.slack.com/services/…) as the secret's string")
    return url.strip()


# ---- executor ---------------------------------------------------------------------------------

class Notifier:
    """Posts phase events; ``enabled`` only when a webhook secret is configured and readable."""

    def __init__(self, settings, say=None, timeout_s: float = 5.0, fetch=None):
        self.say = say or (lambda msg: None)
        self.timeout_s = timeout_s
        self.environment = getattr(settings, "environment", "")
        self.secret = None
        self.sent = 0
        self.failed = 0
        name = (getattr(settings, "notify", None) or {}).get("webhook_secret_name")
        if not name:
            return
        from .errors import OpsError

        if fetch is None:
            from .secrets import fetch_secret as fetch
        try:
            self.secret = fetch(settings, name)
            check_url(self.secret.reveal())
        except OpsError as exc:
            self.secret = None
            self.say(f"notifications off: {exc.one_line()}")

    @property
    def enabled(self) -> bool:
        return self.secret is not None

    def phase(self, phase: str, event: str, title: str = "", **kw) -> bool:
        if not self.enabled:
            return False
        return self.post(message(phase, event, title, environment=self.environment, **kw))

    def post(self, payload: dict) -> bool:
        url = self.secret.reveal()
        data = json.dumps(payload).encode()
        req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
        host = urlsplit(url).hostname or ""
        # a loopback receiver is never reached through a proxy from the environment
        handlers = [urllib.request.ProxyHandler({})] if host in ("localhost", "127.0.0.1", "::1") else []
        try:
            with urllib.request.build_opener(*handlers).open(req, timeout=self.timeout_s) as r:
                ok = 200 <= r.status < 300
        except Exception as exc:  # noqa: BLE001 - a failed post never fails the cutover
            ok = False
            why = type(exc).__name__
        else:
            why = f"HTTP {r.status}"
        if ok:
            self.sent += 1
        else:
            self.failed += 1
            self.say(f"notification not delivered ({why}); the cutover goes on")
        return ok
