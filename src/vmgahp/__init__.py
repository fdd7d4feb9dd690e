"""vmgahp: a wire-compatible, asynchronous VM GAHP for HTCondor's VM universe."""

__version__ = "0.1.0"
