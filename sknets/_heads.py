"""Classification and regression on top of :class:`~sknets._base._BaseNet`.

Targets (labels, label indicators, numbers), class weights, output
activations, ``partial_fit``, ``predict``, ``predict_proba``.
"""

import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import (
    check_classification_targets,
    type_of_target,
    unique_labels,
)
from sklearn.utils.validation import (
    column_or_1d,
)

from sknets._base import _BaseNet, _check_solver
from sknets._compat import (
    StrOptions,
    check_partial_fit_first_call,
    with_callbacks,
)

CLASS_WEIGHT_CONSTRAINT = {"class_weight": [dict, list, StrOptions({"balanced"}), None]}


class _ClassifierNet(_BaseNet):
    """Classification on top of :class:`_BaseNet`, with scikit-learn's label logic."""

    _parameter_constraints: dict = {
        **_BaseNet._parameter_constraints,
        **CLASS_WEIGHT_CONSTRAINT,
    }

    def _labels(self, target):
        if target.ndim == 1:  # class codes
            return self.classes_[target]
        if self._label_binarizer.y_type_ != "multilabel-indicator":
            return self.classes_[target.ravel()]  # binary: (n, 1) codes
        return target

    def _stratify(self, target, n_outputs):
        # the user's labels (not their codes), so that errors name them
        if n_outputs != 1:
            return None
        return self.classes_[np.asarray(target).ravel()]

    def _sample_weight(self, X, y, sample_weight, incremental):
        """``sample_weight`` times the weights of the classes (``class_weight``).

        As scikit-learn's linear models: ``'balanced'`` weighs class ``c`` by
        ``n_samples / (n_classes * count(c))``, a dict by its values (1 for
        the classes it leaves out); for multilabel ``y`` a list of dicts, one
        per output, multiplied together (``compute_sample_weight``).
        """
        sample_weight = super()._sample_weight(X, y, sample_weight, incremental)
        class_weight = getattr(self, "class_weight", None)
        if class_weight is None:
            return sample_weight
        if incremental and class_weight == "balanced":
            raise ValueError(
                "class_weight='balanced' is not supported for partial_fit: the "
                "class frequencies of one batch are not those of the data. Pass "
                "a dict, e.g. from sklearn.utils.class_weight.compute_class_weight "
                "on all the labels."
            )
        labels = np.asarray(y)
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels.ravel()
        weights = compute_sample_weight(class_weight, labels).astype(X.dtype)
        return weights if sample_weight is None else sample_weight * weights

    def _is_classifier(self):
        return True

    def _validate_input(self, X, y, incremental, reset, validation=False):
        X, y = self._validate_Xy(X, y, reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if validation:  # a validation set: only classes seen in training
            classes = unique_labels(y)
            if len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    f"y_val has classes not in the training data: {classes} vs "
                    f"classes_ {self.classes_}."
                )
        elif (not hasattr(self, "classes_")) or (
            not self.warm_start and not incremental
        ):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
            # one class: one logistic output that learns "not the other
            # class", predicting that class always, as scikit-learn's MLP does
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same "
                        "classes as in the previous call to fit. Previously "
                        f"got {self.classes_}, `y` has {classes}"
                    )
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    "`y` has classes not in `self.classes_`. "
                    f"`self.classes_` has {self.classes_}. 'y' has {classes}."
                )
        if y.ndim == 1:
            # class codes directly: LabelBinarizer.transform needs ~50 bytes
            # per sample, an (n, 1) indicator or class index needs 1 or 8
            codes = np.searchsorted(self.classes_, y)
            if self._label_binarizer.y_type_ == "multiclass":
                return X, codes.astype(np.int64), len(self.classes_)
            return X, codes.astype(np.uint8).reshape(-1, 1), 1
        Y = self._label_binarizer.transform(y)
        if sp.issparse(Y):
            Y = Y.toarray()
        return X, Y.astype(np.uint8), Y.shape[1]

    def _output_activation(self):
        return (
            "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"
        )

    def _extra_state(self):
        return {"y_type": self._label_binarizer.y_type_}

    def _load_extra_state(self, extra):
        lb = LabelBinarizer()
        lb.classes_, lb.y_type_, lb.sparse_input_ = (
            self.classes_,
            extra["y_type"],
            False,
        )
        self._label_binarizer = lb

    @available_if(_check_solver)
    @with_callbacks
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """Update the model with a single epoch over the given data.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.
        classes : array of shape (n_classes,), default=None
            All classes that can appear in ``y``; required on the first call
            unless ``y`` is a label indicator matrix.

        Returns
        -------
        self : object
            The trained estimator.
        """
        self._validate_params()
        if check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight, incremental=True)

    def predict_proba(self, X):
        """Probability estimates.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        y_prob : ndarray of shape (n_samples, n_classes)
            The probability of each class, in the order of ``classes_``.
        """
        y_pred = self._forward(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
            return np.vstack([1 - y_pred, y_pred]).T
        return y_pred

    def predict_log_proba(self, X):
        """Logarithm of the probability estimates.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        log_y_prob : ndarray of shape (n_samples, n_classes)
            ``log(predict_proba(X))``.
        """
        y_prob = self.predict_proba(X)
        return np.log(y_prob, out=y_prob)

    @staticmethod
    def _multilabel_tags(tags):
        # Called from the public classes' __sklearn_tags__: ClassifierMixin,
        # first in their MRO, replaces classifier_tags after this base runs.
        tags.classifier_tags.multi_label = True
        return tags

    def predict(self, X):
        """Predict class labels (or label indicators for multilabel ``y``).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_classes)
            The predicted classes.
        """
        y_pred = self._forward(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        return self._label_binarizer.inverse_transform(y_pred)


class _RegressorNet(_BaseNet):
    """Regression on top of :class:`_BaseNet`."""

    def _validate_input(self, X, y, incremental, reset, validation=False):
        X, y = self._validate_Xy(X, y, reset, y_numeric=True)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if self.loss == "poisson" and np.any(y < 0):
            raise ValueError("loss='poisson' requires non-negative y.")
        Y = y.reshape(y.shape[0], -1)
        return X, Y, Y.shape[1]

    def _output_activation(self):
        return "exp" if self.loss == "poisson" else "identity"

    @available_if(_check_solver)
    @with_callbacks
    def partial_fit(self, X, y, sample_weight=None):
        """Update the model with a single epoch over the given data.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.

        Returns
        -------
        self : object
            The trained estimator.
        """
        self._validate_params()
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X):
        """Predict using the network.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            The predicted values.
        """
        y_pred = self._forward(X)
        return y_pred.ravel() if y_pred.shape[1] == 1 else y_pred
