"""Model selection for sknets networks: searches that reuse training runs.

:class:`GridSearchCV` and :class:`RandomizedSearchCV` are drop-ins for
scikit-learn's that train each network once per fold for all the epoch counts
(``max_iter``) in the grid.
"""

from sknets.model_selection._search import GridSearchCV, RandomizedSearchCV

__all__ = ["GridSearchCV", "RandomizedSearchCV"]
