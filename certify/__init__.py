"""Certification: randomized smoothing and LiRPA bounds (installed as robaudit.certify)."""
