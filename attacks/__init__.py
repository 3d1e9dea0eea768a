"""Attacks and corruptions (installed as robaudit.attacks)."""

from robaudit.attacks.apgd import APGD as APGD
from robaudit.attacks.base import Attack as Attack
from robaudit.attacks.base import BudgetViolation as BudgetViolation
from robaudit.attacks.base import Norm as Norm
from robaudit.attacks.corruptions import CORRUPTIONS as CORRUPTIONS
from robaudit.attacks.corruptions import corrupt as corrupt
from robaudit.attacks.fgsm import FGSM as FGSM
from robaudit.attacks.pgd import PGD as PGD
from robaudit.attacks.powerlaw import PowerLawFit as PowerLawFit
from robaudit.attacks.powerlaw import fit_power_law as fit_power_law
from robaudit.attacks.square import Square as Square
