"""The hyperspectral workload: layout, checks, synth (torch-free) and train (imported only by training)."""
