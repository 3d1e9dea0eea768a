"""Grid-aligned patch perturbations (Gu, Tresp & Qin, ECCV 2022): masks, natural patch
corruption and the patch-wise adversarial attack."""
