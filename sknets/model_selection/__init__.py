"""Model selection for sknets networks: searches that train networks as one.

:class:`GridSearchCV` and :class:`RandomizedSearchCV` are drop-ins for
scikit-learn's that train each network once per fold for all the epoch counts
(``max_iter``) in the grid, and the runs of networks of one shape as one
stacked network; :func:`cross_validate` does the same for the folds of one
estimator. :class:`HalvingGridSearchCV` and :class:`HalvingRandomSearchCV`
are scikit-learn's successive halving; with epochs as the budget
(``resource="max_iter"``) the survivors of each rung go on training instead
of starting again.
"""

from sknets.model_selection._halving import HalvingGridSearchCV, HalvingRandomSearchCV
from sknets.model_selection._search import GridSearchCV, RandomizedSearchCV
from sknets.model_selection._validation import cross_validate

__all__ = [
    "GridSearchCV",
    "HalvingGridSearchCV",
    "HalvingRandomSearchCV",
    "RandomizedSearchCV",
    "cross_validate",
]
