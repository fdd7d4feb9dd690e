"""Hypervisor backends, loaded lazily through :mod:`vmgahp.drivers.registry`."""
