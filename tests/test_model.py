"""The HardNet module: the authors' layout, normalised output, BatchNorm folding."""

import pytest
import torch

from hardnet_desc.core.model import DESCRIPTOR_DIM, HardNet, fuse_hardnet, standardize_patches

CONV_IDX = (0, 3, 6, 9, 12, 15, 19)
BN_IDX = (1, 4, 7, 10, 13, 16, 20)
CONV_SHAPES = (
    (32, 1, 3, 3),
    (32, 32, 3, 3),
    (64, 32, 3, 3),
    (64, 64, 3, 3),
    (128, 64, 3, 3),
    (128, 128, 3, 3),
    (128, 128, 8, 8),
)


def test_state_dict_has_the_authors_layout():
    sd = HardNet().state_dict()
    expected = {f"features.{i}.weight": s for i, s in zip(CONV_IDX, CONV_SHAPES)}
    for i, (c_out, *_) in zip(BN_IDX, CONV_SHAPES):
        expected |= {f"features.{i}.running_mean": (c_out,), f"features.{i}.running_var": (c_out,)}
    expected |= {f"features.{i}.num_batches_tracked": () for i in BN_IDX}
    # affine=False BatchNorm and bias-free convs: nothing else may be in the file
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected


def test_output_is_unit_norm(hardnet, example_patches):
    desc = hardnet(example_patches[:64])
    assert desc.shape == (64, DESCRIPTOR_DIM) and desc.dtype == torch.float32
    torch.testing.assert_close(desc.norm(dim=1), torch.ones(64), atol=1e-5, rtol=0)
    # random weights still separate different patches
    assert (desc[:32] * desc[32:]).sum(1).mean() < 0.5


def test_intensity_range_does_not_matter(hardnet, example_patches):
    p = example_patches[:32]
    torch.testing.assert_close(hardnet(p * 255.0), hardnet(p), atol=1e-5, rtol=0)
    torch.testing.assert_close(hardnet(p * 0.5 + 0.2), hardnet(p), atol=1e-5, rtol=0)
    s = standardize_patches(p * 255.0)
    torch.testing.assert_close(s.flatten(1).mean(1), torch.zeros(32), atol=1e-4, rtol=0)
    torch.testing.assert_close(s.flatten(1).std(1), torch.ones(32), atol=1e-4, rtol=0)


def test_fused_equals_eval_hardnet(hardnet, example_patches):
    p = example_patches[:64]
    ref = hardnet(p)
    fused = fuse_hardnet(hardnet)
    assert len(fused.convs) == 7 and all(c.bias is not None for c in fused.convs)
    torch.testing.assert_close(fused(p), ref, atol=2e-5, rtol=0)
    # the BN statistics are not trivial: ignoring them changes the result
    plain = HardNet().eval()
    plain.load_state_dict({k: v for k, v in hardnet.state_dict().items() if "running" not in k}, strict=False)
    assert (plain(p) - ref).abs().max() > 1e-2


def test_fuse_does_not_change_the_source_net(hardnet, example_patches):
    before = {k: v.clone() for k, v in hardnet.state_dict().items()}
    fuse_hardnet(hardnet)
    for k, v in hardnet.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_eval_is_deterministic_and_train_mode_uses_dropout(hardnet, example_patches):
    p = example_patches[:16]
    torch.testing.assert_close(hardnet(p), hardnet(p), atol=0, rtol=0)
    hardnet.train()
    torch.manual_seed(0)
    a = hardnet(p)
    b = hardnet(p)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("batch", [1, 5])
def test_batch_size_does_not_change_a_descriptor(hardnet, example_patches, batch):
    p = example_patches[:batch]
    torch.testing.assert_close(hardnet(p)[0], hardnet(p[:1])[0], atol=1e-5, rtol=0)
