"""The public classes that a saved file may name, registered where they live.

Persistence sits above the estimators and searches and stores them, but does
not import them: each public class registers here when its module is
imported (:func:`register`), and :mod:`sknets._persistence` asks
:func:`classes`. ``"estimator"``: the networks, whose stored state
``sknets.load`` checks field by field; ``"search"``: sknets' searches, which
skops may rebuild (their own state is scikit-learn's).
"""

_CLASSES = {"estimator": {}, "search": {}}


def register(kind):
    """A class decorator: file the class under ``kind``, by its name."""
    if kind not in _CLASSES:
        raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(_CLASSES)}")

    def decorate(cls):
        _CLASSES[kind][cls.__name__] = cls
        return cls

    return decorate


def classes(kind):
    """The classes registered under ``kind``, by name (a new dict)."""
    return dict(_CLASSES[kind])
