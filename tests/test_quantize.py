"""int8 HardNet: calibration, quantization and the shipped calibration of the bundled weights, on real patches."""

import json

import numpy as np
import pytest
import torch

from hardnet_desc.descriptor import HardNetDescriptor
from hardnet_desc.core.model import fuse_hardnet
from hardnet_desc.core.quantize import (
    CALIBRATION_FILE,
    calibrate,
    int8_available,
    load_calibration,
    quantize_hardnet,
)
from hardnet_desc.core.weights import bundled_file, load_weights

pytestmark = pytest.mark.skipif(not int8_available(), reason="torch without quantized CPU kernels")


def _agreement(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """Mean cosine of matching rows, and how often each row's nearest neighbour in ``reference`` is itself."""
    cosine = float((reference * other).sum(1).mean())
    return cosine, float(((other @ reference.T).argmax(1) == np.arange(len(reference))).mean())


def test_calibrated_int8_net_agrees_with_fp32(hardnet, example_patches):
    fused = fuse_hardnet(hardnet)
    calibration, held_out = example_patches[:200], example_patches[200:]
    activations = calibrate(fused, calibration)
    assert len(activations) == 8 and all(s > 0 and 0 <= z <= 255 for s, z in activations)
    assert activations == calibrate(fused, calibration)  # deterministic
    assert all(z == 0 for _, z in activations[1:-1])  # ReLU outputs are >= 0
    q = quantize_hardnet(fused, activations)
    with torch.inference_mode():
        ref, got = fused(held_out).numpy(), q(held_out).numpy()
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosine, nearest = _agreement(ref, got)
    # measured: mean cosine 0.9951, own row nearest 100 % (untrained weights, 200 calibration patches)
    assert cosine > 0.99 and nearest >= 0.98


def test_bad_activation_list_is_refused(hardnet):
    with pytest.raises(ValueError, match="expected 8 activation"):
        quantize_hardnet(fuse_hardnet(hardnet), [(0.1, 0)] * 3)


def test_bundled_weights_ship_their_calibration():
    weights = load_weights("default")
    table = json.loads(bundled_file(CALIBRATION_FILE).read_text())
    entry = table[weights.fingerprint]  # the one fingerprint of weights, as feature files and ONNX record it
    assert entry["weights"] == weights.source and entry["calibration"]["patches"] > 10_000
    assert load_calibration(weights.state_dict, bundled_file(CALIBRATION_FILE)) == [(float(s), int(z)) for s, z in entry["activations"]]


def test_int8_descriptor_matches_like_fp32_on_the_bundled_pair(example_pair):
    fp32 = HardNetDescriptor(device="cpu", precision="fp32")
    int8 = HardNetDescriptor(device="cpu", precision="int8")
    assert int8.precision == "int8" and "precision='int8'" in repr(int8)
    (d1, d2), (q1, q2) = [[h.detectAndCompute(image)[1] for image in example_pair] for h in (fp32, int8)]
    cosine, _ = _agreement(d1, q1)
    same_match = float(((d1 @ d2.T).argmax(1) == (q1 @ q2.T).argmax(1)).mean())
    # measured: mean cosine 0.9997, the same nearest neighbour in the other photo for 97.9 %
    assert cosine > 0.998 and same_match > 0.95


def test_pickled_int8_descriptor_describes_the_same(example_image, example_keypoints):
    """Pickling keeps the resolved settings (int8, the table's batch size): the copy gives the same descriptors."""
    import pickle

    desc = HardNetDescriptor(device="cpu", precision="int8")
    copy = pickle.loads(pickle.dumps(desc))
    assert (copy.precision, copy.batch_size) == ("int8", desc.batch_size) and repr(copy) == repr(desc)
    kps = example_keypoints
    np.testing.assert_array_equal(copy.compute(example_image, kps)[1], desc.compute(example_image, kps)[1])
