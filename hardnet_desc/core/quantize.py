"""int8 HardNet for x86 CPUs: post-training static quantization run by oneDNN.

The float network is quantized when it is loaded, from its own weights and a few calibrated
numbers, so no second weight file exists:

* **weights**: int8, symmetric, one scale per output channel (``max |w| / 127.5``), computed
  from the fused float weights (``hardnet_desc.core.model.fuse_hardnet``) at load time;
* **activations**: uint8 with one ``(scale, zero_point)`` per tensor, for the standardised
  input and the output of each of the seven convolutions. These come from running the float
  net on patches of training photos (``calibrate``, a histogram observer that minimises
  the quantization error) and are stored per weights in ``int8_calibration.json`` next to the
  bundled weight files, keyed by the weights' ``fingerprint`` (``hardnet_desc.core.weights``);
* **biases** stay float32 (oneDNN adds them in int32/float).

Per-patch standardisation and the final L2 normalisation run in float32; the seven
convolutions (with their ReLUs fused) run as ``quantized::conv2d[_relu]`` on the ``onednn``
engine, which uses AMX-INT8 or AVX-512 VNNI where the CPU has them.

The calibration file of the bundled weights is written by ``benchmarks/calibrate_int8.py``
(a deterministic build step over the training photos, which are not shipped).

``inference_net`` is the whole int8 decision: whether ``"auto"`` runs int8 (``device.choose_precision``
with whether the weights ship calibration), and the int8 net or the refusal.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .device import INT8_ENGINE as _ENGINE
from .device import choose_precision, int8_available
from .model import FusedHardNet, standardize_patches
from .weights import Weights, bundled_file, fingerprint

#: Where the calibrated activation parameters of known weights are stored.
CALIBRATION_FILE = "int8_calibration.json"


class Int8HardNet(nn.Module):
    """HardNet with int8 convolutions: ``(B, 1, 32, 32)`` float patches -> ``(B, 128)`` unit vectors.

    Build with ``quantize_hardnet``. CPU only.
    """

    def __init__(self, convs: nn.ModuleList, input_scale: float, input_zero_point: int) -> None:
        super().__init__()
        self.convs = convs
        self.input_scale = float(input_scale)
        self.input_zero_point = int(input_zero_point)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        _select_engine()
        x = standardize_patches(patches.float()).contiguous(memory_format=torch.channels_last)
        q = torch.quantize_per_tensor(x, self.input_scale, self.input_zero_point, torch.quint8)
        for conv in self.convs:
            q = conv(q)
        return F.normalize(q.dequantize().flatten(1), dim=1)


@torch.inference_mode()
def calibrate(net: FusedHardNet, patches: torch.Tensor, batch_size: int = 256) -> list[tuple[float, int]]:
    """Activation ``(scale, zero_point)`` pairs for ``quantize_hardnet`` from float runs of ``net``.

    Args:
        net: the fused float net (CPU, eval mode).
        patches: ``(N, 1, 32, 32)`` calibration patches, e.g. from training photos. The result
            depends only on them and the weights (no randomness).
        batch_size: patches per forward pass.

    Returns:
        8 pairs: the standardised input, then the output of each convolution (after its ReLU).
    """
    from torch.ao.quantization.observer import HistogramObserver

    observers = [HistogramObserver(dtype=torch.quint8, reduce_range=False) for _ in range(len(net.convs) + 1)]
    last = len(net.convs) - 1
    for start in range(0, len(patches), batch_size):
        x = standardize_patches(patches[start : start + batch_size].float())
        observers[0](x)
        for i, conv in enumerate(net.convs):
            x = conv(x)
            x = F.relu(x) if i < last else x
            observers[i + 1](x)
    return [(float(s), int(z)) for s, z in (obs.calculate_qparams() for obs in observers)]


@torch.no_grad()
def quantize_hardnet(net: FusedHardNet, activations: list[tuple[float, int]]) -> Int8HardNet:
    """The int8 network of ``net`` with the given activation parameters (see ``calibrate``).

    Raises:
        RuntimeError: this torch build has no quantized CPU kernels.
        ValueError: ``activations`` does not hold one pair per quantized tensor.
    """
    if not int8_available():
        raise RuntimeError("precision='int8' needs torch's quantized CPU kernels (oneDNN), missing in this build")
    if len(activations) != len(net.convs) + 1:
        raise ValueError(f"expected {len(net.convs) + 1} activation (scale, zero_point) pairs, got {len(activations)}")
    import torch.ao.nn.intrinsic.quantized as nniq
    import torch.ao.nn.quantized as nnq

    _select_engine()
    convs = nn.ModuleList()
    last = len(net.convs) - 1
    with warnings.catch_warnings():  # quantized tensors are deprecated upstream; the kernels are what we use
        warnings.simplefilter("ignore")
        for i, conv in enumerate(net.convs):
            cls = nniq.ConvReLU2d if i < last else nnq.Conv2d
            qconv = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding)
            qconv.set_weight_bias(_quantize_weight(conv.weight.float().cpu()), conv.bias.float().cpu())
            qconv.scale, qconv.zero_point = activations[i + 1]
            convs.append(qconv)
        torch.quantize_per_tensor(torch.zeros(1), 1.0, 0, torch.quint8)  # the one-time deprecation warning, here
    return Int8HardNet(convs, *activations[0]).eval()


def _quantize_weight(weight: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8, as torch's ``PerChannelMinMaxObserver`` does it."""
    scale = (weight.abs().amax(dim=(1, 2, 3)) / 127.5).clamp(min=torch.finfo(torch.float32).eps)
    zero = torch.zeros(len(weight), dtype=torch.long)
    return torch.quantize_per_channel(weight, scale.double(), zero, 0, torch.qint8)


def _select_engine() -> None:
    if torch.backends.quantized.engine != _ENGINE:
        torch.backends.quantized.engine = _ENGINE


def load_calibration(state_dict: dict[str, torch.Tensor], path: str | Path) -> list[tuple[float, int]] | None:
    """The activation parameters stored in ``path`` for these weights, or ``None`` if it has none.

    Args:
        state_dict: the HardNet state dict (e.g. ``HardNetDescriptor(...).weights.state_dict``).
        path: a calibration JSON, e.g. the one shipped with the bundled weights
            (``weights.bundled_file(CALIBRATION_FILE)``).
    """
    path = Path(path)
    if not path.is_file():
        return None
    entry = json.loads(path.read_text()).get(fingerprint(state_dict))
    return None if entry is None else [(float(s), int(z)) for s, z in entry["activations"]]


def shipped_calibration(weights: Weights) -> list[tuple[float, int]] | None:
    """The int8 activation parameters shipped for ``weights`` (the bundled ones), or ``None``."""
    return load_calibration(weights.state_dict, bundled_file(CALIBRATION_FILE))


def inference_net(
    net: FusedHardNet, weights: Weights, precision: str, device: torch.device
) -> tuple[nn.Module, str]:
    """The network that describes with ``precision`` on ``device``, and that precision resolved: the int8 decision.

    Args:
        net: the fused float net (``fuse_hardnet``) of ``weights``, on ``device``.
        weights: its weights; whether they ship calibration (``shipped_calibration``) decides
            whether ``"auto"`` may take int8 (``device.choose_precision``).
        precision: a name of ``device.PRECISIONS``.
        device: where the net runs.

    Returns:
        ``(net, name)``: ``net`` itself, or its ``Int8HardNet`` when the name is ``"int8"``.

    Raises:
        ValueError: as ``choose_precision``, or ``"int8"`` for weights without calibration.
    """
    activations = shipped_calibration(weights)
    chosen = choose_precision(precision, device, inference=True, int8_calibrated=activations is not None)
    if chosen != "int8":
        return net, chosen
    if activations is None:
        raise ValueError(
            f"precision='int8' needs activation scales calibrated for these weights ({weights.source}); "
            "only the bundled weights ship them (benchmarks/calibrate_int8.py makes them for others)"
        )
    return quantize_hardnet(net, activations), chosen
