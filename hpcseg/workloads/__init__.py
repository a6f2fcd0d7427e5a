"""Workloads, one package each, found by name through :mod:`hpcseg.workloads.registry`."""
