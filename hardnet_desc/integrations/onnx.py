"""Export HardNet to ONNX, for ONNX Runtime, OpenCV's DNN module (Python or C++) and other runtimes.

The graph is built operator by operator from the BatchNorm-folded network
(``fuse_hardnet``), so it holds exactly what
``HardNet`` computes and nothing else:

* input ``patches``: float32 ``(N, 1, 32, 32)``, ``N`` dynamic, in any usual intensity range (0..1,
  0..255, 0..65535): ``HardNetDescriptor`` also scales float patches whose largest magnitude lies beyond
  2^32 or below 2^-8 by a power of two first, the graph does not (float32 squares overflow from about 1e19,
  and below 1e-5 the ``1e-7`` of the standardisation weighs);
* per-patch standardisation (zero mean, unit std with Bessel's correction, as
  ``standardize_patches``) as ``GlobalAveragePool``/``Sub``/``Div``;
* seven ``Conv`` (+ ``Relu``) steps;
* L2 normalisation (``LpNormalization``), output ``descriptors``: float32 ``(N, 128)``.

Only operators that every ONNX opset from 13 on defines the same way are used, so the same graph
is valid for any ``opset`` in ``OPSETS`` and loads in ``cv2.dnn.readNetFromONNX``.

The weights' name, sha256, ``patch_scale`` and ``min_kp_size`` go into the model's
``metadata_props``; the patches must be cut with those (see docs/conventions.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..core.model import DESCRIPTOR_DIM, PATCH_SIZE, HardNet, fuse_hardnet
from ..outputs import check_output, replacing, writing
from ..core.weights import DEFAULT_WEIGHTS, Weights, load_hardnet

#: Opsets the exported graph is valid for.
OPSETS = range(13, 22)
#: Input and output names of the exported graph.
INPUT_NAME, OUTPUT_NAME = "patches", "descriptors"
#: The ``producer_name`` of the models ``export_onnx`` writes: how a later export knows its own file.
PRODUCER = "hardnet-desc"


def export_onnx(
    path: str | Path, weights: str | Path | HardNet = DEFAULT_WEIGHTS, *, opset: int = 17, force: bool = False
) -> Path:
    """Write HardNet (standardisation, network, L2 normalisation) as an ONNX file.

    Args:
        path: the ``.onnx`` file to write (folders are created); an existing one is replaced (atomically)
            only if ``export_onnx`` wrote it, or with ``force``.
        weights: a bundled name, a weight file, ``hf://...`` or a ``HardNet``.
        opset: ONNX opset version, one of ``OPSETS`` (17 is read by ONNX Runtime >= 1.13 and
            OpenCV >= 4.7).
        force: replace ``path`` even if another program wrote it.

    Returns:
        ``path``. Its ``metadata_props`` hold ``weights``, ``weights_sha256`` (of the tensors, as in
        ``hardnet-desc extract``'s HDF5 files), ``patch_scale``, ``min_kp_size``, ``input`` and ``output``.

    Raises:
        TypeError: an opset that is not an integer. ValueError: an opset outside ``OPSETS``.
        FileExistsError: ``path`` exists, was not written by ``export_onnx`` and ``force`` is off.
        WeightsError: weights that cannot be loaded.
    """
    import onnx

    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise TypeError(f"opset must be an integer in {OPSETS.start}..{OPSETS.stop - 1}, got {type(opset).__name__}")
    if int(opset) not in OPSETS:
        raise ValueError(f"opset must be in {OPSETS.start}..{OPSETS.stop - 1}, got {opset}")
    path = check_output(path, is_onnx_ours, force=force)  # before any work
    if isinstance(weights, HardNet):
        net, info = weights, Weights(weights.state_dict(), "HardNet module")  # the caller's mode stays as it was
    else:
        net, info = load_hardnet(weights)
    model = onnx.helper.make_model(
        _graph(fuse_hardnet(net)),
        opset_imports=[onnx.helper.make_opsetid("", int(opset))],
        producer_name=PRODUCER,
    )
    model.ir_version = min(model.ir_version, 8)  # readable by older runtimes (ONNX Runtime >= 1.11)
    onnx.helper.set_model_props(model, _metadata(info))
    onnx.checker.check_model(model, full_check=True)
    with writing(path), replacing(path) as tmp:  # a full disk's error named no file
        onnx.save(model, str(tmp))
    return path


def is_onnx_ours(path: str | Path) -> bool:
    """True if ``path`` is an ONNX model ``export_onnx`` wrote (its ``producer_name``); False for any other file."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False).producer_name == PRODUCER
    except Exception:  # noqa: BLE001 (protobuf's DecodeError and others: not an ONNX model, so not ours)
        return False


def _metadata(info: Weights) -> dict[str, str]:
    return {
        "weights": str(info.source),
        "weights_sha256": info.fingerprint,
        **info.patch_spec.to_metadata(),  # patch_scale, min_kp_size
        "input": json.dumps({"name": INPUT_NAME, "shape": ["N", 1, PATCH_SIZE, PATCH_SIZE], "dtype": "float32"}),
        "output": json.dumps({"name": OUTPUT_NAME, "shape": ["N", DESCRIPTOR_DIM], "dtype": "float32"}),
    }


def _graph(fused: torch.nn.Module):
    """The ONNX graph of a ``FusedHardNet``."""
    from onnx import TensorProto, helper, numpy_helper

    n = float(PATCH_SIZE * PATCH_SIZE)
    consts = {"bessel": np.float32(n / (n - 1.0)), "eps": np.float32(1e-7)}
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in consts.items()]
    node = helper.make_node
    nodes = [
        node("GlobalAveragePool", [INPUT_NAME], ["mean"]),
        node("Sub", [INPUT_NAME, "mean"], ["centred"]),
        node("Mul", ["centred", "centred"], ["sq"]),
        node("GlobalAveragePool", ["sq"], ["var_biased"]),
        node("Mul", ["var_biased", "bessel"], ["var"]),
        node("Sqrt", ["var"], ["std"]),
        node("Add", ["std", "eps"], ["std_eps"]),
        node("Div", ["centred", "std_eps"], ["x0"]),
    ]
    x = "x0"
    last = len(fused.convs) - 1
    for i, conv in enumerate(fused.convs):
        w, b = f"conv{i}.weight", f"conv{i}.bias"
        inits += [numpy_helper.from_array(conv.weight.detach().cpu().float().numpy(), w),
                  numpy_helper.from_array(conv.bias.detach().cpu().float().numpy(), b)]
        k, s, p = conv.kernel_size, conv.stride, conv.padding
        nodes.append(node("Conv", [x, w, b], [f"conv{i}"], kernel_shape=list(k), strides=list(s),
                          pads=[p[0], p[1], p[0], p[1]]))
        x = f"conv{i}"
        if i < last:
            nodes.append(node("Relu", [x], [f"relu{i}"]))
            x = f"relu{i}"
    nodes += [node("Flatten", [x], ["flat"], axis=1), node("LpNormalization", ["flat"], [OUTPUT_NAME], axis=1, p=2)]
    return helper.make_graph(
        nodes,
        "hardnet",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 1, PATCH_SIZE, PATCH_SIZE])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", DESCRIPTOR_DIM])],
        initializer=inits,
    )


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict (e.g. its ``patch_scale``)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}
