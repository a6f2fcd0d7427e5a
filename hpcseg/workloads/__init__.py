"""Workload plug-ins: one folder per dataset (layout, checks, synth, train parts)."""
