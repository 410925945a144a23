"""boto3 clients built from Settings: production uses the default chain; the lab sets endpoint and CA."""

from __future__ import annotations


def client(settings, service: str):
    import boto3

    kwargs = {"region_name": settings.region}
    if settings.aws_endpoint_url:
        kwargs["endpoint_url"] = settings.aws_endpoint_url
    if settings.aws_ca_bundle:
        kwargs["verify"] = settings.aws_ca_bundle
    return boto3.session.Session().client(service, **kwargs)
