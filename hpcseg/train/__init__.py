"""Training runtime: the only part of hpcseg that imports torch (run on the compute node by the job script)."""
