"""The closed vocabulary of bound-propagation methods (strings accepted at the boundary)."""

from __future__ import annotations

import enum

from robaudit.errors import ParameterError


class Method(str, enum.Enum):
    """How output bounds are computed.

    * ``IBP``: interval arithmetic, layer by layer (Gowal et al. 2018).
    * ``CROWN``: backward linear relaxation; every activation input bounded by its own
      backward pass (Zhang et al. 2018; auto_LiRPA ``method='backward'``).
    * ``CROWN_IBP``: intermediate bounds by IBP, the output by one CROWN pass (Zhang et al. 2020).
    * ``ALPHA_CROWN``: CROWN with optimised ReLU lower slopes (Xu et al. 2021).
    """

    IBP = "ibp"
    CROWN = "crown"
    CROWN_IBP = "crown-ibp"
    ALPHA_CROWN = "alpha-crown"

    @property
    def metric_name(self) -> str:
        """The name used in metric keys (no dots, no dashes): ``alpha_crown``."""
        return self.value.replace("-", "_")

    @classmethod
    def parse(cls, value: str | Method) -> Method:
        """Normalise ``"IBP"``, ``"crown"``, ``"alpha-CROWN"``, ``"CROWN-Optimized"``, ``"crown_ibp"`` ..."""
        if isinstance(value, Method):
            return value
        key = str(value).strip().lower().replace("_", "-")
        aliases = {"backward": "crown", "crown-optimized": "alpha-crown", "alphacrown": "alpha-crown",
                   "alpha": "alpha-crown", "crownibp": "crown-ibp"}
        key = aliases.get(key, key)
        for member in cls:
            if member.value == key:
                return member
        raise ParameterError(
            f"unknown LiRPA method {value!r}; use one of {', '.join(m.value for m in cls)}"
        )
