"""Phase notifications to a webhook in Slack-compatible JSON (``{"text": …, "blocks": […]}``).

The webhook URL is a secret (it carries its token): config holds the *name* of a Secrets Manager
secret (``trackerdb.notify.webhook_secret_name``), fetched once per run, masked everywhere. It must be
``https://``: the token must not cross a network in clear (``notify.ca_file``: a CA bundle for a
receiver with a private CA). A secret that holds anything else refuses the cutover before it starts.
Posting is best effort and off the cutover's path: ``phase`` queues the message and returns, one
sender thread posts them in order (each post bounded by ``timeout_s`` per socket operation). After a
post gets no answer at all, the queued start/ok messages are dropped and only failures are still tried
(the webhook is down: the one message that matters is the failure, with its rollback command). ``close`` waits for the
queue at most ``timeout_s`` in all: a webhook that is down, hangs or refuses costs the whole cutover at
most that, and a warning line naming what was not delivered, never the cutover.

Everything posted is scrubbed as the journal is (``secrets.scrub``: Secret objects, secret-named
keys, every secret the session knows) and, since it leaves this machine, ``secrets.redact``
(credentials in URLs, ``password=…``): an unexpected exception's text or a hook's last output line
can carry either.
"""

from __future__ import annotations

import json
import queue
import ssl
import threading
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any, Callable, Iterable
from urllib.parse import urlsplit

from .errors import ConfigError
from .progress import Say
from .secrets import Secret, redact, scrub

if TYPE_CHECKING:
    from .settings import Settings

ICONS = {"start": ":arrow_forward:", "ok": ":white_check_mark:", "failed": ":x:", "info": ":information_source:"}


# ---- pure builders ----------------------------------------------------------------------------

def message(phase: str, event: str, title: str, *, environment: str = "", error: str | None = None,
            rollback: str | None = None, elapsed_s: float | None = None) -> dict[str, Any]:
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
    """The webhook URL, if it is ``https://host/…``; never echoes the URL (it carries the token)."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    if parts is None or parts.scheme.lower() not in ("https", "http") or not host:
        raise ConfigError("the notification webhook secret does not hold an https:// URL",
                          hint="store the webhook URL (https://hooks.slack.com/services/…) as the secret's string")
    if parts.scheme.lower() != "https":
        raise ConfigError("the notification webhook secret holds an http:// URL: "
                          "its token would cross the network in clear",
                          hint="store the receiver's https:// URL as the secret's string "
                               "(notify.ca_file for a private CA)")
    return url.strip()


def scrub_payload(payload: Any, secrets: Iterable[Any] = ()) -> Any:
    """What may be posted: the journal's scrubbing, then credential shapes redacted in every string."""
    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return redact(v) if isinstance(v, str) else v
    return walk(scrub(payload, secrets))


# ---- executor ---------------------------------------------------------------------------------

class Notifier:
    """Posts phase events; ``enabled`` only when a webhook secret is configured and readable.

    A secret that cannot be read turns notifications off with a warning line; one that holds an
    ``http://`` URL or no URL raises ``ConfigError`` (before the cutover starts: nothing changed).
    ``secrets``: a callable returning the values to scrub at each post (the session's grow as phases
    fetch them)."""

    def __init__(self, settings: Settings, say: Say | None = None, timeout_s: float = 5.0,
                 fetch: Callable[[Settings, str], Secret] | None = None,
                 secrets: Callable[[], Iterable[Any]] | None = None):
        self.say: Say = say or (lambda msg: None)
        self.timeout_s = timeout_s
        self.environment = settings.environment
        self.secrets: Callable[[], Iterable[Any]] = secrets or (lambda: ())
        self.secret: Secret | None = None
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.unreachable = False  # a post got no answer at all (down, hanging, refused, TLS): the breaker
        self._queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        name = settings.notify.webhook_secret_name
        if not name:
            return
        from .errors import OpsError
        from .secrets import fetch_secret

        self.context = _tls_context(settings.notify.ca_file)
        try:
            secret = (fetch or fetch_secret)(settings, name)
        except OpsError as exc:
            self.say(f"notifications off: {exc.one_line()}")
            return
        check_url(secret.reveal())
        self.secret = secret

    @property
    def enabled(self) -> bool:
        return self.secret is not None

    def phase(self, phase: str, event: str, title: str = "", **kw: Any) -> bool:
        """Queue one phase event (scrubbed now, posted by the sender thread); False when notifications are off."""
        if not self.enabled:
            return False
        # scrubbed before ``message`` shortens the error: a cut could leave half a secret unmatched
        kw = scrub_payload(kw, (self.secret, *self.secrets()))
        payload = message(phase, event, scrub_payload(title, (self.secret, *self.secrets())),
                          environment=self.environment, **kw)
        if self._thread is None:
            self._thread = threading.Thread(target=self._send_all, name="trackerdb-notify", daemon=True)
            self._thread.start()
        self._queue.put((event, payload))
        return True

    def _send_all(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                event, payload = item
                if self.unreachable and event != "failed":
                    self.dropped += 1  # the webhook is down: keep the queue for the failures
                    continue
                self.post(payload)
            finally:
                self._queue.task_done()

    def close(self, budget_s: float | None = None) -> dict[str, int]:
        """Wait for the queue at most ``budget_s`` (default ``timeout_s``) in all; what is left is reported."""
        if self._thread is None:
            return {"sent": self.sent, "failed": self.failed, "dropped": self.dropped, "undelivered": 0}
        deadline = time.monotonic() + (self.timeout_s if budget_s is None else budget_s)
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        left = self._queue.unfinished_tasks
        self._queue.put(None)  # the sender ends after what it is posting now
        self._thread = None
        if left or self.dropped:
            self.say(f"notifications: {left + self.dropped} not delivered (webhook down or too slow); "
                     "the cutover did not wait for them")
        return {"sent": self.sent, "failed": self.failed, "dropped": self.dropped, "undelivered": left}

    def post(self, payload: dict[str, Any]) -> bool:
        if self.secret is None:
            return False
        url = self.secret.reveal()
        data = json.dumps(scrub_payload(payload, (self.secret, *self.secrets()))).encode()
        req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
        host = urlsplit(url).hostname or ""
        # a loopback receiver is never reached through a proxy from the environment
        handlers: list[urllib.request.BaseHandler] = (
            [urllib.request.ProxyHandler({})] if host in ("localhost", "127.0.0.1", "::1") else [])
        handlers.append(urllib.request.HTTPSHandler(context=self.context))
        try:
            with urllib.request.build_opener(*handlers).open(req, timeout=self.timeout_s) as r:
                ok = 200 <= r.status < 300
        except Exception as exc:  # noqa: BLE001 - a failed post never fails the cutover
            ok = False
            why = type(exc).__name__
            # no answer at all: only failures are still worth a try (an HTTP error status answered at once)
            self.unreachable = not isinstance(exc, urllib.error.HTTPError)
        else:
            why = f"HTTP {r.status}"
        if ok:
            self.sent += 1
        else:
            self.failed += 1
            self.say(f"notification not delivered ({why}); the cutover goes on")
        return ok


def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Certificate and host name verified: the system's CAs, or ``notify.ca_file`` alone."""
    if ca_file is None:
        return ssl.create_default_context()
    from pathlib import Path

    if not isinstance(ca_file, str) or not Path(ca_file).is_file():
        raise ConfigError(f"notify.ca_file {ca_file!r} is not a file",
                          hint="the CA bundle (PEM) that signed the webhook receiver's certificate, or leave it unset")
    try:
        return ssl.create_default_context(cafile=ca_file)
    except ssl.SSLError:
        raise ConfigError(f"notify.ca_file {ca_file} is not a PEM CA bundle",
                          hint="a PEM file of CA certificates") from None
