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

import io
import warnings
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from torch import nn

from sknets.onnx._torch import _head, _network, _sknets_estimator_types

_INSTALL = "pip install 'sknets[onnx]'"

_CLASSIFIER_OPTIONS = {
    "zipmap": [True, False, "columns"],
    "output_class_labels": [False, True],
    "nocl": [True, False],
}

# The torch exporters tried in order for ConvNets and pretrained networks.
_EXPORTERS = ("torchscript", "dynamo")

_ACTIVATIONS = {nn.ReLU: "Relu", nn.Sigmoid: "Sigmoid", nn.Tanh: "Tanh"}


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


def _cast(scope, container, name, out, to):
    container.add_node(
        "Cast", name, out, to=to, name=scope.get_unique_operator_name("Cast")
    )


def _constant(scope, container, seed, value):
    from onnx import numpy_helper

    name = scope.get_unique_variable_name(seed)
    tensor = numpy_helper.from_array(np.asarray(value))
    container.add_initializer(name, tensor.data_type, list(tensor.dims), tensor)
    return name


# ------------------------------------------------------------------ MLP layers


def _mlp_nodes(scope, container, layers, x):
    """``Linear -> [BatchNorm] -> activation -> [Dropout]`` layers as ONNX nodes.

    Batch normalization (eval mode: running statistics) is folded into the
    weights of the layer before it, in float64; dropout is the identity at
    inference and is left out.
    """
    pending = None  # (W (in, out), b) in float64, not yet written

    def flush(current):
        nonlocal pending
        if pending is None:
            return current
        weight, bias = pending
        pending = None
        w = _constant(scope, container, "coefficient", weight.astype(np.float32))
        b = _constant(scope, container, "intercepts", bias.astype(np.float32))
        product = scope.get_unique_variable_name("mul_result")
        out = scope.get_unique_variable_name("add_result")
        container.add_node(
            "MatMul",
            [current, w],
            product,
            name=scope.get_unique_operator_name("MatMul"),
        )
        container.add_node(
            "Add", [product, b], out, name=scope.get_unique_operator_name("Add")
        )
        return out

    current = x
    for layer in layers:
        if isinstance(layer, nn.Linear):
            current = flush(current)
            weight = layer.weight.detach().cpu().double().numpy().T
            if layer.bias is not None:
                bias = layer.bias.detach().cpu().double().numpy()
            else:
                bias = np.zeros(weight.shape[1])
            pending = (weight, bias)
        elif isinstance(layer, nn.BatchNorm1d) and pending is not None:
            scale, shift = _batch_norm(layer)
            pending = (pending[0] * scale, pending[1] * scale + shift)
        elif isinstance(layer, (nn.Dropout, nn.Identity)):
            continue
        elif type(layer) in _ACTIVATIONS:
            current = flush(current)
            op = _ACTIVATIONS[type(layer)]
            out = scope.get_unique_variable_name(op.lower())
            container.add_node(
                op, current, out, name=scope.get_unique_operator_name(op)
            )
            current = out
        else:
            raise NotImplementedError(
                f"No ONNX conversion for the layer {layer!r} of an MLP."
            )
    return flush(current)


def _batch_norm(layer):
    """``(scale, shift)`` of an eval-mode batch normalization, in float64."""
    mean = layer.running_mean.detach().cpu().double().numpy()
    var = layer.running_var.detach().cpu().double().numpy()
    scale = 1.0 / np.sqrt(var + layer.eps)
    shift = -mean * scale
    if layer.affine:
        gamma = layer.weight.detach().cpu().double().numpy()
        beta = layer.bias.detach().cpu().double().numpy()
        scale, shift = scale * gamma, shift * gamma + beta
    return scale, shift


# ------------------------------------------------------------------ torch graphs


def _torch_nodes(scope, container, model, x):
    """The network exported by torch, copied into skl2onnx's graph."""
    network = _network(model)
    opset = container.target_opset_onnx
    proto = _export(network, model.n_features_in_, opset)
    return _splice(scope, container, proto, x)


def _export(network, n_features, opset):
    """The ONNX model of ``network`` (flat rows in, raw outputs out) at ``opset``."""
    import onnx

    errors = []
    for exporter in _EXPORTERS:
        try:
            proto = _EXPORT[exporter](network, n_features, opset)
            if proto.functions:
                from onnx import inliner

                proto = inliner.inline_local_functions(proto)
            versions = {o.domain: o.version for o in proto.opset_import}
            if versions.get("", opset) != opset:
                proto = onnx.version_converter.convert_version(proto, opset)
        except Exception as e:  # the next exporter may manage
            first = (str(e).strip().splitlines() or [""])[0]  # not the IR dump
            errors.append(f"- {exporter}: {type(e).__name__}: {first}")
            continue
        return proto
    raise RuntimeError(
        f"torch.onnx.export could not export the {type(network).__name__} "
        f"network at opset {opset}:\n" + "\n".join(errors)
    )


def _export_torchscript(network, n_features, opset):
    import onnx
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation notice, tracer warnings
        torch.onnx.export(
            network,
            (torch.zeros(2, n_features),),
            buffer,
            dynamo=False,
            input_names=["X"],
            output_names=["Y"],
            dynamic_axes={"X": {0: "N"}, "Y": {0: "N"}},
            opset_version=opset,
        )
    return onnx.load_from_string(buffer.getvalue())


def _export_dynamo(network, n_features, opset):
    import torch

    try:
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "the torch.export-based exporter needs onnxscript (pip install onnxscript)"
        ) from e
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            network,
            (torch.zeros(2, n_features),),
            dynamo=True,
            input_names=["X"],
            output_names=["Y"],
            dynamic_shapes=({0: torch.export.Dim("N")},),
            opset_version=max(opset, 18),
            verbose=False,
        )
    return program.model_proto


_EXPORT = {"torchscript": _export_torchscript, "dynamo": _export_dynamo}


def _splice(scope, container, proto, x):
    """Copy the nodes and initializers of ``proto`` into ``container``.

    Every name gets a fresh one from ``scope``; the graph's input becomes
    ``x``. Returns the name of its output.
    """
    from onnx import AttributeProto, helper, numpy_helper

    graph = proto.graph
    inputs = [i.name for i in graph.input]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise RuntimeError(
            f"The exported network has {len(inputs)} inputs and "
            f"{len(graph.output)} outputs; one of each was expected."
        )
    names = {inputs[0]: x, "": ""}

    def rename(name):
        if name not in names:
            names[name] = scope.get_unique_variable_name("net_" + _clean(name))
        return names[name]

    for init in graph.initializer:
        tensor = numpy_helper.from_array(numpy_helper.to_array(init))
        container.add_initializer(
            rename(init.name), tensor.data_type, list(tensor.dims), tensor
        )
    versions = {o.domain: o.version for o in proto.opset_import}
    for node in graph.node:
        attributes = {}
        for a in node.attribute:
            if a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
                raise NotImplementedError(
                    f"The exported network has a {node.op_type} node with a "
                    f"subgraph, which sknets does not convert."
                )
            attributes[a.name] = helper.get_attribute_value(a)
        domain = node.domain or ""
        container.add_node(
            node.op_type,
            _node_inputs(scope, container, node, rename),
            [rename(o) for o in node.output],
            op_domain=domain,
            op_version=versions.get(domain),
            name=scope.get_unique_operator_name("net_" + node.op_type),
            **attributes,
        )
    return rename(graph.output[0].name)


def _node_inputs(scope, container, node, rename):
    """The renamed inputs of ``node``, none of them empty.

    skl2onnx orders nodes by their inputs, and an omitted optional input
    (``""``) is no value it knows: trailing ones are dropped, and ``Resize``'s
    ``roi`` and ``scales`` before ``sizes`` become empty tensors, which mean
    the same.
    """
    inputs = list(node.input)
    while inputs and inputs[-1] == "":
        inputs.pop()
    if "" not in inputs:
        return [rename(i) for i in inputs]
    if node.op_type != "Resize":
        raise NotImplementedError(
            f"The exported network has a {node.op_type} node with an omitted "
            f"input, which sknets does not convert."
        )
    empty = _constant(scope, container, "empty", np.zeros(0, dtype=np.float32))
    return [empty if i == "" else rename(i) for i in inputs]


def _clean(name):
    return "".join(c if c.isalnum() else "_" for c in name).strip("_") or "v"
