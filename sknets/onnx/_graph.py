"""ONNX nodes of a network: its layers as ONNX operators, or torch's export spliced in.

:func:`_mlp_nodes` writes an MLP's layers as ``Gemm``/activation nodes (a
batch norm folded in); other networks are exported by torch
(TorchScript, else ``torch.export``) and :func:`_splice` copies that graph
into skl2onnx's, names made unique. Used by :mod:`._convert`.
"""

import io
import warnings

import numpy as np
from torch import nn

from sknets.onnx._torch import _network

# The torch exporters tried in order for ConvNets and pretrained networks.
_EXPORTERS = ("torchscript", "dynamo")

_ACTIVATIONS = {nn.ReLU: "Relu", nn.Sigmoid: "Sigmoid", nn.Tanh: "Tanh"}


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
