"""Provisioning of the dedicated database host (issue 4).

Pure builders (``apt``, ``volume``, ``pgconf``, ``roles``) turn Settings and host facts into command
lines and file text; ``facts`` holds the commands that read a host and the parsers of their output;
``ops`` is the operation: read facts, compute what differs, apply it, report each step.
"""
