"""Experiment: a copy of some weights that records another minimum keypoint size.

    python benchmarks/min_kp_size.py hardnet-desc-v3 3.5 runs/v3-ms3.5.safetensors
    hardnet-desc eval-pairs data/eval-pairs/heldout-v3 --methods hardnet --weights runs/v3-ms3.5.safetensors

``min_kp_size`` is a property of the weights (``hardnet_desc.core.patches``: the patch of a keypoint
smaller than it is cut as for a keypoint of that size), read by ``HardNetDescriptor`` and every
command that describes. To run any command with another value, write such a copy: the tensors
and the other metadata are kept. Datasets take it at build time: ``make-dataset --min-kp-size``.
docs/training.md ("Third round" and after) has what it did.
"""

from __future__ import annotations

import sys

from hardnet_desc.core.patches import DEFAULT_PATCH_SCALE, check_min_kp_size
from hardnet_desc.core.weights import load_hardnet, save_weights


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        sys.exit(__doc__)
    source, value, out = argv
    net, weights = load_hardnet(source)
    metadata = {**weights.metadata, "min_kp_size": repr(check_min_kp_size(float(value)))}
    if weights.patch_scale is None:
        metadata["patch_scale"] = repr(DEFAULT_PATCH_SCALE)  # files without one were described at the default
    path = save_weights(net, out, metadata)
    print(f"wrote {path}: {weights.source} with min_kp_size {metadata['min_kp_size']}")


if __name__ == "__main__":
    main(sys.argv[1:])
