"""HAM10000 skin-lesion classification (seed 002): weights mapping, evaluation, Grad-CAM, synthetic looks."""
