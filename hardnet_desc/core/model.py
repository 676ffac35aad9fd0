"""The HardNet network (Mishchuk et al., NIPS 2017).

The layer layout reproduces the authors' code, so that their checkpoints load
with ``strict=True``: convolutions at ``features.{0,3,6,9,12,15,19}`` and the
BatchNorm running statistics at ``features.{1,4,7,10,13,16,20}``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PATCH_SIZE = 32
DESCRIPTOR_DIM = 128

# (in, out, stride) of the six 3x3 convolutions; the seventh, 8x8, gives the 128-D descriptor.
_CONVS = ((1, 32, 1), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2), (128, 128, 1))


def standardize_patches(patches: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Per-patch zero mean, unit std, so 0..1 and 0..255 inputs describe alike.

    Args:
        patches: ``(B, 1, H, W)``.
    """
    flat = patches.flatten(1)
    mean = flat.mean(dim=1).view(-1, 1, 1, 1)
    std = flat.std(dim=1).view(-1, 1, 1, 1)
    return (patches - mean) / (std + eps)


class HardNet(nn.Module):
    """HardNet: 32x32 grey patch -> L2-normalised 128-D descriptor.

    Input ``(B, 1, 32, 32)`` float patches in any intensity range; output
    ``(B, 128)`` unit vectors. Each patch is standardised inside the module.
    """

    def __init__(self, dropout: float = 0.3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out, stride in _CONVS:
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(c_out, affine=False),
                nn.ReLU(),
            ]
        layers += [
            nn.Dropout(dropout),
            nn.Conv2d(128, DESCRIPTOR_DIM, 8, bias=False),
            nn.BatchNorm2d(DESCRIPTOR_DIM, affine=False),
        ]
        self.features = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The authors' init: orthogonal conv weights with gain 0.6.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.orthogonal_(m.weight, gain=0.6)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = self.features(standardize_patches(patches))
        return F.normalize(x.flatten(1).float(), dim=1)


class FusedHardNet(nn.Module):
    """Inference-only HardNet with each BatchNorm folded into its convolution.

    Gives the same output as ``HardNet.eval()`` (up to float rounding) with
    seven conv+bias(+ReLU) steps instead of twenty layers. Build with
    ``fuse_hardnet``.
    """

    def __init__(self, convs: nn.ModuleList) -> None:
        super().__init__()
        self.convs = convs

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = standardize_patches(patches)
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < last:
                x = F.relu(x)
        return F.normalize(x.flatten(1).float(), dim=1)


@torch.no_grad()
def fuse_hardnet(net: HardNet) -> FusedHardNet:
    """Fold every BatchNorm (running statistics, no affine) into the conv before it."""
    convs = nn.ModuleList()
    layers = list(net.features)
    for i, layer in enumerate(layers):
        if not isinstance(layer, nn.Conv2d):
            continue
        bn = layers[i + 1]
        assert isinstance(bn, nn.BatchNorm2d)
        scale = torch.rsqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            bias=True,
        ).to(layer.weight.device)
        fused.weight.copy_(layer.weight * scale.view(-1, 1, 1, 1))
        fused.bias.copy_(-bn.running_mean * scale)
        convs.append(fused)
    return FusedHardNet(convs).eval()
