"""Pulumi program for the tracker database host: one ComponentResource per concern, wired in ``__main__``."""
