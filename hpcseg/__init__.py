"""hpcseg: from a YAML job to finished, compared training results on an HPC cluster."""

__version__ = "0.1.0"
