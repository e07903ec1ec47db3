"""Model selection for sknets networks: searches that train networks as one.

:class:`GridSearchCV` and :class:`RandomizedSearchCV` are drop-ins for
scikit-learn's that train each network once per fold for all the epoch counts
(``max_iter``) in the grid, and the runs of networks of one shape as one
stacked network; :func:`cross_validate` does the same for the folds of one
estimator.
"""

from sknets.model_selection._search import GridSearchCV, RandomizedSearchCV
from sknets.model_selection._validation import cross_validate

__all__ = ["GridSearchCV", "RandomizedSearchCV", "cross_validate"]
