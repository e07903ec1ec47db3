"""scikit-learn's estimator checks over every public estimator.

One table of small, fast settings per estimator (``CHECK_SETTINGS``) and one
table of expected failures (``EXPECTED_FAILED_CHECKS``), each with a sentence of
reason. The target is an empty failure table.
"""

from sklearn.utils.estimator_checks import parametrize_with_checks
from torch import nn

import sknets


class _TinyBackbone(nn.Sequential):
    """A tiny backbone for any row width (passed as a class, built in fit).

    Each feature goes through 8 tanh units (a per-feature 1x1 convolution);
    the default layer is the input of the final Identity: the flattened
    (8 * n_features) activations.
    """

    def __init__(self):
        super().__init__(
            nn.Unflatten(1, (1, -1)),
            nn.Conv1d(1, 8, kernel_size=1),
            nn.Tanh(),
            nn.Flatten(),
            nn.Identity(),
        )


_PRETRAINED = dict(backbone=_TinyBackbone, weights=None, random_state=0, device="cpu")

# Small networks, a batch larger than any check dataset (one full batch per
# epoch, so sample order cannot matter) and enough epochs to learn the checks'
# easy problems.
_FAST = dict(
    hidden_layer_sizes=(16,),
    batch_size=1000,
    max_iter=100,
    learning_rate_init=0.01,
    random_state=0,
    device="cpu",
)

CHECK_SETTINGS = {
    sknets.PretrainedFeatureExtractor: [_PRETRAINED],
    sknets.FineTunedClassifier: [
        dict(
            **_PRETRAINED,
            head_epochs=50,
            fine_tune_lr=0.01,
            batch_size=1000,
            max_iter=100,
            learning_rate_init=0.01,
        )
    ],
    sknets.MLPClassifier: [_FAST],
    sknets.MLPRegressor: [_FAST],
    # Each row of the checks' tabular data is a 1-channel signal; kernels and
    # pooling windows shrink to the (sometimes single-feature) rows.
    sknets.ConvNetClassifier: [dict(_FAST, filters=(4,), kernel_size=2)],
    # Two members, no dropout, no early-stopping split and float64 (float32
    # sums differ in the last bits with the row count): sample weights are
    # then equivalent to repeated rows, as the checks require.
    sknets.TabularClassifier: [
        dict(_FAST, n_members=2, dropout=0.0, early_stopping=False, dtype="float64")
    ],
    sknets.TabularRegressor: [
        dict(_FAST, n_members=2, dropout=0.0, early_stopping=False, dtype="float64")
    ],
}

EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {}


def _instances():
    for cls, settings in CHECK_SETTINGS.items():
        for params in settings:
            yield cls(**params)


@parametrize_with_checks(
    list(_instances()),
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS.get(
        type(est).__name__, {}
    ),
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def test_every_public_estimator_is_checked():
    public = {
        getattr(sknets, name)
        for name in sknets.__all__
        if isinstance(getattr(sknets, name), type)
    }
    estimators = {c for c in public if hasattr(c, "get_params")}
    assert estimators <= set(CHECK_SETTINGS)
