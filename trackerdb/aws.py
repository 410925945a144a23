"""boto3 clients built from Settings: production uses the default chain; the lab sets endpoint and CA."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .settings import Settings


def client(settings: Settings, service: str):
    import boto3

    kwargs: dict[str, str | None] = {"region_name": settings.region}
    if settings.aws_endpoint_url:
        kwargs["endpoint_url"] = settings.aws_endpoint_url
    if settings.aws_ca_bundle:
        kwargs["verify"] = settings.aws_ca_bundle
    creds = settings.s3_credentials if settings.is_lab else None
    if creds and not os.environ.get("AWS_ACCESS_KEY_ID"):
        # the lab's moto accepts its fixed test keys (not secrets); production uses the default chain
        kwargs["aws_access_key_id"] = creds.get("access_key_id")
        kwargs["aws_secret_access_key"] = creds.get("secret_access_key")
    return boto3.session.Session().client(service, **kwargs)
