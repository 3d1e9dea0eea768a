"""The error raised when a network contains an operator the LiRPA engine cannot bound."""

from __future__ import annotations

from robaudit.errors import CapabilityError


class UnsupportedOperatorError(CapabilityError):
    """The traced network contains an operator without a sound linear relaxation here.

    The message names the operator and the graph node, and lists what is supported,
    so the user can replace it (e.g. MaxPool2d by a strided convolution or AvgPool2d).
    """
