"""proxlib: exact proximal operators for structured sparsity in deep learning.

Every ``prox_*`` returns ``argmin_x 1/2 ||x - v||^2 + step * Omega(x)`` as a new
array of the input's library (NumPy, CuPy or torch), device, shape and floating
dtype; inputs are never modified.  :data:`OPERATORS` lists every operator
(penalty class, public function, kernel).  ``import proxlib`` imports neither
numba, cupy nor torch.
"""

from ._dispatch import available_backends, use_backend
from .elementwise import (
    Reweighting,
    lp_threshold,
    prox_lp,
    prox_weighted_l1,
    prox_weighted_l2sq,
    reweight_focuss,
    reweight_l1,
    reweight_l2,
)
from .exclusive import (
    mu_schedule,
    prox_exclusive_lasso,
    prox_exclusive_lasso_thesis,
    prox_group_exclusive,
    prox_group_exclusive_sequential,
)
from .group import prox_group_lasso
from .groupings import GROUPINGS, from_rows, to_rows
from .owl import (
    owl_weights_constant,
    owl_weights_oscar,
    owl_weights_piecewise_linear,
    owl_weights_spike,
    owl_weights_stairwise,
    prox_growl,
    prox_owl,
)
from ._registry import OPERATORS
from .certificates import optimality_residual, residual_tolerance
from .penalties import OWL, ExclusiveLasso, GroupExclusive, GroupLasso, GrOWL, Lp, Penalty, WeightedL1, WeightedL2Sq

__version__ = "0.1.0"

__all__ = [
    # operators
    "prox_owl",
    "prox_growl",
    "prox_group_lasso",
    "prox_exclusive_lasso",
    "prox_group_exclusive",
    "prox_weighted_l1",
    "prox_weighted_l2sq",
    "prox_lp",
    # the seeds' approximations, for reproduction
    "prox_exclusive_lasso_thesis",
    "prox_group_exclusive_sequential",
    # penalty objects and the registry of operators
    "OPERATORS",
    "Penalty",
    "OWL",
    "GrOWL",
    "GroupLasso",
    "ExclusiveLasso",
    "GroupExclusive",
    "WeightedL1",
    "WeightedL2Sq",
    "Lp",
    # OWL / GrOWL weights
    "owl_weights_constant",
    "owl_weights_oscar",
    "owl_weights_stairwise",
    "owl_weights_piecewise_linear",
    "owl_weights_spike",
    # row views of weight tensors
    "GROUPINGS",
    "to_rows",
    "from_rows",
    # re-weighting and schedules
    "Reweighting",
    "reweight_l1",
    "reweight_l2",
    "reweight_focuss",
    "mu_schedule",
    "lp_threshold",
    # certificates (proxlib.certificates; solvers: proxlib.solvers, helpers: proxlib.testing)
    "optimality_residual",
    "residual_tolerance",
    # backends
    "use_backend",
    "available_backends",
]
