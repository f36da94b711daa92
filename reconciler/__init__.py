"""A declarative GitOps reconciler for run-once deployment jobs."""

__version__ = "0.1.0"
