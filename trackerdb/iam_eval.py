"""A small, strict evaluator of identity-policy Allow statements for S3 and Secrets Manager requests.

It implements just what our policies use: Action/Resource with IAM wildcards (``*``, ``?``) and
``StringEquals``/``StringLike`` conditions on ``s3:prefix``/``s3:delimiter``; any other operator or
key makes a statement not match (so a statement we don't understand can only deny, never allow).
IAM's rule for missing request keys: a condition on a key the request lacks does not match.
Deny statements are not evaluated: this answers "what do the Allow statements grant".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


def _as_list(v) -> list:
    return v if isinstance(v, list) else [v]


def _like(pattern: str, value: str) -> bool:
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, value, flags=re.S) is not None


@dataclass(frozen=True)
class Request:
    action: str  # e.g. s3:ListBucket
    resource: str  # ARN
    context: dict = field(default_factory=dict)  # s3:prefix, s3:delimiter (absent = not sent)


def _condition_ok(cond: dict, ctx: dict) -> bool:
    for op, kv in cond.items():
        if op not in ("StringEquals", "StringLike"):
            return False
        for key, wanted in kv.items():
            if key not in ctx:
                return False
            vals = _as_list(wanted)
            if op == "StringEquals" and ctx[key] not in vals:
                return False
            if op == "StringLike" and not any(_like(v, ctx[key]) for v in vals):
                return False
    return True


def allowed(statements: list[dict], req: Request) -> bool:
    for st in statements:
        if st.get("Effect") != "Allow" or "NotAction" in st or "NotResource" in st:
            continue
        if not any(_like(a.lower(), req.action.lower()) for a in _as_list(st.get("Action", []))):
            continue
        if not any(_like(r, req.resource) for r in _as_list(st.get("Resource", []))):
            continue
        if _condition_ok(st.get("Condition") or {}, req.context):
            return True
    return False


def s3_request(method: str, bucket: str, key_or_query: str) -> Request:
    """An S3 REST request (as an access log shows it) as the IAM action it needs."""
    from urllib.parse import parse_qs, unquote, urlsplit

    bucket_arn = f"arn:aws:s3:::{bucket}"
    if key_or_query.startswith("?") or key_or_query == "":
        q = {k: v[0] for k, v in parse_qs(urlsplit(key_or_query).query, keep_blank_values=True).items()}
        ctx = {k2: q[k1] for k1, k2 in (("prefix", "s3:prefix"), ("delimiter", "s3:delimiter")) if k1 in q}
        return Request("s3:ListBucket", bucket_arn, ctx)
    key = unquote(key_or_query)
    action = {"GET": "s3:GetObject", "HEAD": "s3:GetObject", "PUT": "s3:PutObject", "DELETE": "s3:DeleteObject"}[method]
    return Request(action, f"{bucket_arn}/{key}")
