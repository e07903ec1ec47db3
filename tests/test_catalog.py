"""Registrations that let a lower layer reach a higher one (catalog, skops states)."""

import pytest

import sknets
from sknets import _catalog
from sknets.model_selection import GridSearchCV, HalvingGridSearchCV


def test_every_public_estimator_and_search_is_registered():
    estimators = _catalog.classes("estimator")
    for name in (
        "MLPClassifier",
        "MLPRegressor",
        "ConvNetClassifier",
        "PretrainedFeatureExtractor",
        "FineTunedClassifier",
    ):
        assert estimators[name] is getattr(sknets, name)
    searches = _catalog.classes("search")
    assert searches["GridSearchCV"] is GridSearchCV
    # only the searches skops may rebuild (scikit-learn's state inside)
    assert HalvingGridSearchCV not in searches.values()


def test_classes_is_a_copy():
    got = _catalog.classes("estimator")
    got.clear()
    assert _catalog.classes("estimator")


def test_register_files_a_class_and_refuses_an_unknown_kind(monkeypatch):
    monkeypatch.setitem(_catalog._CLASSES, "estimator", {})

    @_catalog.register("estimator")
    class Mine:
        pass

    assert _catalog.classes("estimator") == {"Mine": Mine}
    with pytest.raises(ValueError, match="unknown kind 'model'"):
        _catalog.register("model")


def test_a_saved_estimator_names_a_registered_class(tmp_path):
    X = [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [1.0, 1.0]]
    clf = sknets.MLPClassifier((2,), max_iter=2, random_state=0).fit(X, [0, 1, 0, 1])
    again = sknets.load(sknets.save(clf, tmp_path / "m.sknets"))
    assert type(again) is _catalog.classes("estimator")["MLPClassifier"]


def test_skops_states_are_registered_with_pickling(monkeypatch):
    """sknets._skops registers the portable state; without it, a clear error."""
    from sknets import _pickling, _skops

    assert _pickling._CODEC["state"] is _skops.portable_state
    assert _pickling._CODEC["restore"] is _skops.restore_portable
    monkeypatch.setattr(_pickling, "_CODEC", {})
    with pytest.raises(RuntimeError, match="import sknets first"):
        sknets.MLPClassifier().__getstate__()
