"""skl2onnx converters for the sknets estimators, and ``to_onnx``.

skl2onnx, onnx and torch's ONNX exporter are imported inside the functions,
so that ``import sknets.onnx`` works without them (``to_torch`` needs none).
Everything goes through skl2onnx's public registration
(``update_registered_converter``) and its converter API (``scope`` names,
``container.add_node`` / ``add_initializer``).

- MLPs are written as plain ONNX operators, layer by layer (``MatMul``,
  ``Add``, the activation; batch normalization folded into the weights,
  dropout dropped).
- ConvNets and pretrained networks are exported by ``torch.onnx.export``
  (the TorchScript exporter, or the ``torch.export``-based one where that
  fails and onnxscript is installed), and the exported graph is copied into
  skl2onnx's, every name made unique.

The network always computes in float32 (``Cast`` in front, float32 weights);
outputs are float64 where the graph's input is, as skl2onnx's converters do,
except the probabilities that go into ``ZipMap``, which takes float32 only.
"""

from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from sknets.onnx._graph import _cast, _constant, _mlp_nodes, _torch_nodes
from sknets.onnx._torch import _head, _sknets_estimator_types

_INSTALL = "pip install 'sknets[onnx]'"

_CLASSIFIER_OPTIONS = {
    "zipmap": [True, False, "columns"],
    "output_class_labels": [False, True],
    "nocl": [True, False],
}


def _require():
    """Import the ONNX dependencies, or say which extra brings them."""
    try:
        import onnx  # noqa: F401
        import skl2onnx  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"sknets.onnx.to_onnx needs skl2onnx and onnx ({e}). Install them "
            f"with: {_INSTALL} (onnxruntime, also in that extra, runs the "
            f"exported models)."
        ) from e


# ------------------------------------------------------------------ registration

_registered = False


def register_converters():
    """Register the sknets estimators with skl2onnx.

    After this call, skl2onnx's own ``to_onnx`` and ``convert_sklearn``
    convert sknets estimators, alone or inside pipelines.
    :func:`to_onnx` calls it; calling it again does nothing.

    Returns
    -------
    aliases : dict
        The skl2onnx alias each estimator class is registered under.

    See Also
    --------
    to_onnx : Convert a fitted estimator or pipeline.

    Examples
    --------
    >>> from sknets.onnx import register_converters
    >>> register_converters()["MLPClassifier"]
    'SknetsMLPClassifier'
    """
    global _registered
    _require()
    from skl2onnx import update_registered_converter

    aliases = {}
    for cls in _sknets_estimator_types():
        alias = f"Sknets{cls.__name__}"
        aliases[cls.__name__] = alias
        if _registered:
            continue
        if cls.__name__ == "PretrainedFeatureExtractor":
            shape, convert, options = _features_shape, _convert_features, None
        elif cls.__name__ == "MLPRegressor":
            shape, convert, options = _regressor_shape, _convert_regressor, None
        else:
            shape, convert = _classifier_shape, _convert_classifier
            options = _CLASSIFIER_OPTIONS
        update_registered_converter(cls, alias, shape, convert, options=options)
    _registered = True
    return aliases


def to_onnx(
    model,
    X=None,
    name=None,
    initial_types=None,
    target_opset=None,
    options=None,
    white_op=None,
    black_op=None,
    final_types=None,
    dtype=None,
    naming=None,
    model_optim=True,
    verbose=0,
):
    """Convert a fitted estimator or pipeline with sknets networks to ONNX.

    ``skl2onnx.to_onnx``, with converters for every sknets
    estimator registered first: any estimator, ``Pipeline``,
    ``ColumnTransformer``... that skl2onnx converts may hold sknets
    estimators, and becomes one ONNX graph. The graph takes the flat rows the
    estimator takes, with a dynamic batch dimension.

    Outputs are named as skl2onnx names them for scikit-learn's own
    estimators: classifiers give ``label`` and ``probabilities`` (a list of
    dicts, ``ZipMap``, unless ``options={"zipmap": False}``; the options
    ``zipmap='columns'``, ``nocl`` and ``output_class_labels`` work as for
    scikit-learn's classifiers), regressors ``variable`` of shape
    ``(n_samples, n_outputs)``, :class:`~sknets.PretrainedFeatureExtractor`
    its features as ``variable``.

    Parameters
    ----------
    model : estimator
        A fitted sknets estimator, or a fitted scikit-learn estimator
        (``Pipeline``, ...) whose steps skl2onnx or sknets convert.

    X : array-like of shape (n_samples, n_features), default=None
        A few rows of input: only their type and width are used (the batch
        dimension is always dynamic). Flat rows for image estimators, as
        ``X.reshape(len(X), -1)`` gives. Sparse rows are densified. Needed
        unless ``initial_types`` is given.

    name, initial_types, target_opset, options, white_op, black_op, \
final_types, dtype, naming, model_optim, verbose
        As in ``skl2onnx.to_onnx``.

    Returns
    -------
    onx : onnx.ModelProto
        The ONNX model.

    Raises
    ------
    ImportError
        When skl2onnx or onnx is not installed (``pip install
        'sknets[onnx]'``).
    TypeError
        When ``model`` is not an estimator.
    sklearn.exceptions.NotFittedError
        When ``model`` is not fitted.

    See Also
    --------
    to_torch : The network as a torch module, for ``torch.export``.
    register_converters : Register the converters with skl2onnx only.

    Notes
    -----
    The network computes in float32 whatever precision it was trained in
    (onnxruntime has no float64 convolutions); outputs are float64 where the
    graph's input is, as in skl2onnx. ``uint8`` pixels given to an image
    estimator are mapped to ``[0, 1]`` in the graph, as ``predict`` does.
    ConvNets and pretrained networks go through ``torch.onnx.export``:
    TorchScript's exporter first, then, where it fails (antialiased
    downscaling with ``resize``), the ``torch.export``-based one, which
    needs ``onnxscript``.

    Examples
    --------
    >>> import numpy as np
    >>> import onnxruntime as ort
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sknets import MLPClassifier
    >>> from sknets.onnx import to_onnx
    >>> X = np.random.RandomState(0).normal(size=(60, 4)).astype(np.float32)
    >>> y = np.where(X[:, 0] > 0, "yes", "no")
    >>> pipe = make_pipeline(StandardScaler(),
    ...                      MLPClassifier((8,), max_iter=20, random_state=0))
    >>> pipe = pipe.fit(X, y)
    >>> onx = to_onnx(pipe, X[:1], options={"zipmap": False})
    >>> session = ort.InferenceSession(onx.SerializeToString())
    >>> label, proba = session.run(None, {"X": X[:5]})
    >>> bool((label == pipe.predict(X[:5])).all())
    True
    >>> bool(np.allclose(proba, pipe.predict_proba(X[:5]), atol=1e-5))
    True
    """
    _require()
    from skl2onnx import to_onnx as skl2onnx_to_onnx

    if not isinstance(model, BaseEstimator):
        raise TypeError(
            f"to_onnx takes a fitted scikit-learn or sknets estimator; got "
            f"{type(model).__name__}."
        )
    check_is_fitted(model)
    for est in [model, *model.get_params(deep=True).values()]:
        reason = getattr(type(est), "_onnx_unsupported", None)
        if isinstance(est, BaseEstimator) and reason:
            raise TypeError(f"to_onnx cannot convert {type(est).__name__}: {reason}")
    if X is None and initial_types is None:
        raise ValueError(
            "to_onnx needs X (a few rows of input, for their type and width) or "
            "initial_types."
        )
    if X is not None:
        X = _sample(X)
    register_converters()
    return skl2onnx_to_onnx(
        model,
        X,
        name=name,
        initial_types=initial_types,
        target_opset=target_opset,
        options=options,
        white_op=white_op,
        black_op=black_op,
        final_types=final_types,
        dtype=dtype,
        naming=naming,
        model_optim=model_optim,
        verbose=verbose,
    )


def _sample(X):
    """The rows skl2onnx reads input types from: dense, and few."""
    import scipy.sparse as sp

    if sp.issparse(X):
        return X[:2].toarray()
    if hasattr(X, "iloc") or isinstance(X, (list, tuple)):
        return X  # skl2onnx reads data frames column by column
    X = np.asarray(X)
    if X.ndim == 0:
        raise ValueError(
            "X must be a few rows of input, shape (n_samples, n_features); got "
            "a scalar."
        )
    return X[:2]


# ------------------------------------------------------------------ shapes


def _checked_input(operator):
    """The input variable of a sknets operator, checked: one 2-D tensor."""
    from skl2onnx.common.data_types import (
        DoubleTensorType,
        FloatTensorType,
        Int32TensorType,
        Int64TensorType,
        UInt8TensorType,
    )

    model = operator.raw_operator
    check_is_fitted(model)
    name = type(model).__name__
    if len(operator.inputs) != 1:
        raise ValueError(
            f"{name} takes one input tensor of shape (n_samples, n_features); "
            f"got {len(operator.inputs)} inputs (a DataFrame gives one per "
            f"column: pass X.to_numpy(), or put a ColumnTransformer first)."
        )
    variable = operator.inputs[0]
    allowed = (
        FloatTensorType,
        DoubleTensorType,
        Int64TensorType,
        Int32TensorType,
        UInt8TensorType,
    )
    if not isinstance(variable.type, allowed):
        raise TypeError(
            f"{name} takes a float, double, int or uint8 tensor; got "
            f"{type(variable.type).__name__}."
        )
    shape = variable.type.shape
    if shape is None or len(shape) != 2:
        raise ValueError(
            f"{name} takes flat rows of shape (n_samples, n_features); got an "
            f"input of shape {shape}. Pass X.reshape(len(X), -1)."
        )
    width = shape[1]
    if isinstance(width, Integral) and width != model.n_features_in_:
        raise ValueError(
            f"X has {width} features, but {name} is expecting "
            f"{model.n_features_in_} features as input."
        )
    return variable


def _output_type(variable, zipmap=False):
    """float64 outputs for float64 input, as skl2onnx's; ZipMap takes float32."""
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    if isinstance(variable.type, DoubleTensorType) and not zipmap:
        return DoubleTensorType
    return FloatTensorType


def _classes(scope, model):
    """The class labels the graph returns, and whether they are strings."""
    from skl2onnx.common.utils_classifier import get_label_classes

    classes = np.asarray(get_label_classes(scope, model))
    if classes.dtype.kind in "US" or classes.dtype == object:
        return np.array([str(c) for c in classes], dtype=object), True
    if classes.dtype.kind == "f":
        if not np.array_equal(classes, np.round(classes)):
            raise ValueError(
                f"ONNX class labels are integers or strings; "
                f"{type(model).__name__}.classes_ has non-integral floats "
                f"{classes}. Fit it on integer or string labels."
            )
    return classes.astype(np.int64), False


def _multilabel(model):
    return model.out_activation_ == "logistic" and model.n_outputs_ > 1


def _classifier_shape(operator):
    from skl2onnx.common.data_types import Int64TensorType, StringTensorType

    variable = _checked_input(operator)
    model = operator.raw_operator
    n = variable.get_first_dimension()
    width = len(model.classes_) if not _multilabel(model) else model.n_outputs_
    if _multilabel(model):
        label = Int64TensorType([n, width])
    else:
        _, strings = _classes(operator.scope_inst, model)
        label = StringTensorType([n]) if strings else Int64TensorType([n])
    operator.outputs[0].type = label
    zipmap = operator.scope_inst.get_options(model, {"zipmap": True})["zipmap"]
    operator.outputs[1].type = _output_type(variable, zipmap is True)([n, width])


def _regressor_shape(operator):
    variable = _checked_input(operator)
    model = operator.raw_operator
    n = variable.get_first_dimension()
    operator.outputs[0].type = _output_type(variable)([n, model.n_outputs_])


def _features_shape(operator):
    variable = _checked_input(operator)
    model = operator.raw_operator
    n = variable.get_first_dimension()
    operator.outputs[0].type = _output_type(variable)([n, model.n_features_out_])


# ------------------------------------------------------------------ converters


def _convert_classifier(scope, operator, container):
    from onnx import TensorProto

    model = operator.raw_operator
    proba = _probabilities(scope, operator, container)
    label, probabilities = operator.outputs[0], operator.outputs[1]
    if _multilabel(model):
        half = _constant(scope, container, "half", np.array(0.5, dtype=np.float32))
        above = scope.get_unique_variable_name("above")
        container.add_node(
            "Greater",
            [proba, half],
            above,
            name=scope.get_unique_operator_name("Greater"),
        )
        _cast(scope, container, above, label.full_name, TensorProto.INT64)
    else:
        classes, strings = _classes(scope, model)
        classes_name = scope.get_unique_variable_name("classes")
        if strings:
            container.add_initializer(
                classes_name,
                TensorProto.STRING,
                [len(classes)],
                [c.encode("utf-8") for c in classes],
            )
        else:
            container.add_initializer(
                classes_name, TensorProto.INT64, [len(classes)], classes
            )
        index = scope.get_unique_variable_name("argmax")
        container.add_node(
            "ArgMax",
            proba,
            index,
            axis=1,
            keepdims=0,
            name=scope.get_unique_operator_name("ArgMax"),
        )
        container.add_node(
            "Gather",
            [classes_name, index],
            label.full_name,
            axis=0,
            name=scope.get_unique_operator_name("Gather"),
        )
    _finish(scope, container, proba, probabilities)


def _convert_regressor(scope, operator, container):
    _finish(
        scope,
        container,
        _probabilities(scope, operator, container),
        operator.outputs[0],
    )


_convert_features = _convert_regressor


def _finish(scope, container, name, output):
    """Write float32 ``name`` to ``output``, in the output's own precision."""
    from onnx import TensorProto
    from skl2onnx.common.data_types import DoubleTensorType

    if isinstance(output.type, DoubleTensorType):
        _cast(scope, container, name, output.full_name, TensorProto.DOUBLE)
    else:
        container.add_node(
            "Identity",
            name,
            output.full_name,
            name=scope.get_unique_operator_name("Identity"),
        )


def _probabilities(scope, operator, container):
    """The network and its output activation: float32 outputs of the model."""
    model = operator.raw_operator
    x = _float_input(scope, operator, container)
    if type(model).__name__ in ("MLPClassifier", "MLPRegressor"):
        raw = _mlp_nodes(scope, container, model.module_.layers, x)
    else:
        raw = _torch_nodes(scope, container, model, x)
    head = _head(model)
    if head == "identity" or head == "features":
        return raw
    out = scope.get_unique_variable_name(head)
    if head == "softmax":
        container.add_node(
            "Softmax",
            raw,
            out,
            axis=1,
            name=scope.get_unique_operator_name("Softmax"),
        )
    elif head == "exp":
        container.add_node("Exp", raw, out, name=scope.get_unique_operator_name("Exp"))
    else:  # logistic, binary
        p = out if head == "logistic" else scope.get_unique_variable_name("p")
        container.add_node(
            "Sigmoid", raw, p, name=scope.get_unique_operator_name("Sigmoid")
        )
        if head == "binary":
            one = _constant(scope, container, "one", np.array(1.0, dtype=np.float32))
            q = scope.get_unique_variable_name("q")
            container.add_node(
                "Sub", [one, p], q, name=scope.get_unique_operator_name("Sub")
            )
            container.add_node(
                "Concat",
                [q, p],
                out,
                axis=1,
                name=scope.get_unique_operator_name("Concat"),
            )
    return out


def _float_input(scope, operator, container):
    """The input as float32; ``uint8`` pixels in ``[0, 1]`` for image models."""
    from onnx import TensorProto
    from skl2onnx.common.data_types import FloatTensorType, UInt8TensorType

    variable = operator.inputs[0]
    if isinstance(variable.type, FloatTensorType):
        return variable.full_name
    x = scope.get_unique_variable_name("x_float")
    _cast(scope, container, variable.full_name, x, TensorProto.FLOAT)
    pixels = type(operator.raw_operator).__name__ in (
        "FineTunedClassifier",
        "PretrainedFeatureExtractor",
    )
    if isinstance(variable.type, UInt8TensorType) and pixels:
        scale = _constant(scope, container, "pixel", np.array(255.0, np.float32))
        scaled = scope.get_unique_variable_name("x_scaled")
        container.add_node(
            "Div", [x, scale], scaled, name=scope.get_unique_operator_name("Div")
        )
        return scaled
    return x
