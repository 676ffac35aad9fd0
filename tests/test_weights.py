"""Loading weights from every supported source, and the errors for every way it can go wrong."""

import copy
import hashlib

import numpy as np
import pytest
import torch

from hardnet_desc.core import weights as W
from hardnet_desc.descriptor import HardNetDescriptor
from hardnet_desc.core.model import HardNet
from hardnet_desc.core.patches import PatchSpec
from hardnet_desc.core.weights import WeightsError, load_hardnet, load_weights, save_weights


def _outputs_match(net: HardNet, source, patches: torch.Tensor) -> None:
    loaded, _ = load_hardnet(source)  # strict load_state_dict
    with torch.no_grad():
        torch.testing.assert_close(loaded(patches), net(patches), atol=1e-6, rtol=0)


def test_authors_checkpoint_loads_strict(hardnet, example_patches, tmp_path):
    path = tmp_path / "checkpoint_5.pth"
    torch.save({"epoch": 5, "state_dict": hardnet.state_dict()}, path)
    weights = load_weights(path)
    assert weights.source == str(path) and weights.patch_scale is None
    assert set(weights.state_dict) == set(hardnet.state_dict())
    _outputs_match(hardnet, path, example_patches[:16])
    # the loaded values are the saved ones, not a fresh init
    assert not torch.equal(weights.state_dict["features.0.weight"], HardNet().state_dict()["features.0.weight"])


@pytest.mark.parametrize("prefix", ["", "module."])
@pytest.mark.parametrize("with_counters", [True, False])
def test_bare_state_dict_loads(hardnet, example_patches, tmp_path, prefix, with_counters):
    sd = {prefix + k: v for k, v in hardnet.state_dict().items() if with_counters or "num_batches" not in k}
    path = tmp_path / "bare.pt"
    torch.save(sd, path)
    assert set(load_weights(path).state_dict) == {k.removeprefix(prefix) for k in sd}
    _outputs_match(hardnet, path, example_patches[:16])


def test_safetensors_round_trip_keeps_metadata(hardnet, example_patches, tmp_path):
    path = save_weights(hardnet, tmp_path / "sub" / "w.safetensors", {"patch_scale": 7.5, "note": "test run"})
    weights = load_weights(path)
    assert weights.patch_scale == 7.5
    assert weights.metadata["note"] == "test run"
    for k, v in hardnet.state_dict().items():
        assert torch.equal(weights.state_dict[k], v), k
    _outputs_match(hardnet, path, example_patches[:16])
    # the descriptor takes the patch scale recorded in the file unless told otherwise
    assert HardNetDescriptor(path, device="cpu").patch_scale == 7.5
    assert HardNetDescriptor(path, device="cpu", patch_scale=5.0).patch_scale == 5.0
    assert weights.min_kp_size == 0.0  # not recorded: no minimum


@pytest.mark.parametrize("value", ["3.5", "0", "4"])
def test_min_kp_size_is_read_from_the_file(hardnet, tmp_path, value):
    path = save_weights(hardnet, tmp_path / "w.safetensors", {"patch_scale": 6.0, "min_kp_size": value})
    assert load_weights(path).min_kp_size == float(value)
    assert HardNetDescriptor(path, device="cpu").min_kp_size == float(value)
    assert HardNetDescriptor(path, device="cpu", min_kp_size=2.0).min_kp_size == 2.0


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "3.5px"])
def test_bad_min_kp_size_in_a_file_is_a_weights_error(hardnet, tmp_path, value):
    path = save_weights(hardnet, tmp_path / "w.safetensors", {"min_kp_size": value})
    with pytest.raises(WeightsError, match=f"w.safetensors: metadata min_kp_size '{value}' is not a number >= 0"):
        HardNetDescriptor(path, device="cpu")


def test_patch_spec_is_read_from_the_file(hardnet, tmp_path):
    path = save_weights(hardnet, tmp_path / "w.safetensors", {"patch_scale": "12.0", "min_kp_size": "3.5"})
    weights = load_weights(path)
    assert weights.patch_spec == PatchSpec(scale=12.0, min_kp_size=3.5)
    assert (weights.patch_scale, weights.min_kp_size) == (12.0, 3.5)
    bare = load_weights(save_weights(hardnet, tmp_path / "bare.safetensors"))
    assert bare.patch_spec == PatchSpec() and bare.patch_scale is None and bare.min_kp_size == 0.0
    with pytest.raises(WeightsError, match=r"bad\.safetensors: metadata patch_scale '0' is not a positive number"):
        load_weights(save_weights(hardnet, tmp_path / "bad.safetensors", {"patch_scale": "0"}))


def test_missing_file_and_unknown_name(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(WeightsError, match=f"{missing}.*no such file"):
        load_weights(missing)
    with pytest.raises(WeightsError, match="'fancy-name': no such file, and not a bundled name"):
        load_weights("fancy-name")


def test_unknown_file_type(hardnet, tmp_path):
    path = tmp_path / "w.npz"
    path.write_bytes(b"\0" * 16)
    with pytest.raises(WeightsError, match=r"w\.npz: unknown weight file type '\.npz'"):
        load_weights(path)


@pytest.mark.parametrize("keep", [100, 0.5])
def test_truncated_safetensors(hardnet, tmp_path, keep):
    path = save_weights(hardnet, tmp_path / "w.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])
    with pytest.raises(WeightsError, match=f"{path}: not a readable safetensors file"):
        load_weights(path)


def test_corrupt_pth(hardnet, tmp_path):
    good = tmp_path / "good.pth"
    torch.save(hardnet.state_dict(), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(WeightsError, match=f"{truncated}: not a readable torch checkpoint"):
        load_weights(truncated)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(WeightsError, match=f"{junk}: (not a readable torch checkpoint|refused by the safe loader)"):
        load_weights(junk)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", r"empty file \(0 bytes\)"),  # was IndexError in the error formatter
        (b"hello\n", "not a readable torch checkpoint"),
        (b"\x80\x02}q\x00.", "not a readable torch checkpoint"),  # a bare pickle of {}, not a torch zip
    ],
)
def test_broken_pth_files_are_weights_errors(tmp_path, content, match):
    path = tmp_path / "w.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=match):
        load_weights(path)


def test_state_dict_with_non_string_keys(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({1: torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match="not a state dict"):
        load_weights(path)


class _Payload:
    """Unpickling this creates a file: a stand-in for code execution."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_that_runs_code_is_refused(hardnet, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": hardnet.state_dict(), "extra": _Payload(marker)}, path)
    with pytest.raises(WeightsError, match=f"{path}: refused by the safe loader \\(it needs the global io.open\\)") as err:
        load_weights(path)
    assert "weights_only=False" not in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()
    # the payload is live: an unsafe load would have run it
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_wrong_architecture(hardnet, tmp_path):
    sd = hardnet.state_dict()
    missing = {k: v for k, v in sd.items() if k != "features.19.weight"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match=r"missing\.pth: not a HardNet state dict \(missing keys: \['features\.19"):
        load_weights(tmp_path / "missing.pth")

    extra = dict(sd, **{"classifier.weight": torch.zeros(10, 128)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(WeightsError, match=r"unexpected keys: \['classifier\.weight'\]"):
        load_weights(tmp_path / "extra.pth")

    wide = dict(sd, **{"features.0.weight": torch.zeros(32, 3, 3, 3)})  # an RGB first layer
    torch.save(wide, tmp_path / "rgb.pth")
    with pytest.raises(WeightsError, match=r"rgb\.pth: features\.0\.weight has shape \(32, 3, 3, 3\), HardNet expects"):
        load_weights(tmp_path / "rgb.pth")


def test_bfloat16_weights_describe_as_their_float32_copy(hardnet, example_patches, tmp_path):
    """The fingerprint read the weights through numpy, which has no bfloat16: the constructor stopped there."""
    half = copy.deepcopy(hardnet).to(torch.bfloat16)
    path = save_weights(half, tmp_path / "bf16.safetensors", {"patch_scale": 6.0})
    weights = load_weights(path)
    assert len(weights.fingerprint) == 64 and weights.fingerprint != load_weights(hardnet).fingerprint
    got = HardNetDescriptor(path, device="cpu", precision="fp32").describe_patches(example_patches[:16])
    want = HardNetDescriptor(half.float(), device="cpu", precision="fp32").describe_patches(example_patches[:16])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_odd_tensors_in_a_state_dict_are_weights_errors(hardnet, tmp_path):
    """They passed load_weights and failed in torch: the constructor's load_state_dict, or a sparse comparison."""
    sd = hardnet.state_dict()
    counter = next(k for k in sd if k.endswith("num_batches_tracked"))
    torch.save(dict(sd, **{counter: torch.zeros(5)}), tmp_path / "counter.pth")
    with pytest.raises(WeightsError, match=rf"counter\.pth: {counter} is shape \(5,\), dtype torch.float32, Batch"):
        load_weights(tmp_path / "counter.pth")
    torch.save(dict(sd, **{"features.0.weight": sd["features.0.weight"].to_sparse()}), tmp_path / "sparse.pth")
    with pytest.raises(WeightsError, match=r"features\.0\.weight is a torch.sparse_coo tensor"):
        load_weights(tmp_path / "sparse.pth")


def test_nan_weights(hardnet, tmp_path):
    hardnet.features[20].running_var[3] = float("nan")
    path = save_weights(hardnet, tmp_path / "nan.safetensors")
    with pytest.raises(WeightsError, match=r"nan\.safetensors: features\.20\.running_var contains NaN or inf"):
        load_weights(path)


@pytest.fixture
def fake_bundle(hardnet, tmp_path, monkeypatch):
    """A bundled entry 'test' pointing at a file in tmp_path; returns its path."""
    path = save_weights(hardnet, tmp_path / "bundled.safetensors", {"patch_scale": 6.5})
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setattr(W, "BUNDLED", {"test": (path.name, digest)})
    monkeypatch.setattr(W, "_REPO_WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(W, "bundled_path", lambda name: tmp_path / W.BUNDLED[name][0])
    return path


def test_bundled_name_loads_with_the_right_checksum(fake_bundle, hardnet, example_patches):
    for name in ("test", "default"):
        weights = load_weights(name)
        assert weights.source == "test" and weights.patch_scale == 6.5
    _outputs_match(hardnet, "default", example_patches[:8])
    assert HardNetDescriptor(device="cpu").patch_scale == 6.5


def test_bundled_checksum_mismatch(fake_bundle, monkeypatch):
    monkeypatch.setitem(W.BUNDLED, "test", (fake_bundle.name, "0" * 64))
    with pytest.raises(WeightsError, match=f"{fake_bundle}: sha256 [0-9a-f]{{64}} does not match the pinned 0+"):
        load_weights("test")
    fake_bundle.unlink()
    with pytest.raises(WeightsError, match="bundled weights 'test' are missing"):
        load_weights("default")


def _hf_cache(root, repo_id: str, filename: str, data: bytes, commit: str) -> None:
    """huggingface_hub's cache layout: models--owner--name/{refs/main, snapshots/<commit>/<file>}."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    target = repo / "snapshots" / commit / filename
    target.parent.mkdir(parents=True)
    target.write_bytes(data)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty offline Hugging Face cache. huggingface_hub reads its env vars at import, so patch both."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_hf_uri_from_offline_cache(offline_hub, hardnet, example_patches, tmp_path):
    path = save_weights(hardnet, tmp_path / "w.safetensors", {"patch_scale": 5.5})
    commit = "0123456789abcdef0123456789abcdef01234567"
    _hf_cache(offline_hub, "someone/hardnet", "v1/hardnet.safetensors", path.read_bytes(), commit)
    base = "hf://someone/hardnet/v1/hardnet.safetensors"
    for uri in (base, f"{base}@{commit}"):
        weights = load_weights(uri)
        assert weights.source == uri and weights.patch_scale == 5.5
    _outputs_match(hardnet, base, example_patches[:8])
    with pytest.raises(WeightsError, match="hf://someone/hardnet/other.safetensors: HF_HUB_OFFLINE is set and the file is not in the local"):
        load_weights("hf://someone/hardnet/other.safetensors")


@pytest.mark.parametrize("uri", ["hf://someone/hardnet", "hf://someone//w.safetensors", "hf://"])
def test_bad_hf_uri(offline_hub, uri):
    with pytest.raises(WeightsError, match=r"expected hf://owner/repo/path/to/file\[@revision\]"):
        load_weights(uri)


def test_no_bundled_weights_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(W, "BUNDLED", {})
    with pytest.raises(WeightsError, match="no bundled weights are installed.*pass weights="):
        HardNetDescriptor()


def test_hf_uri_without_network_fails_fast_in_one_line(monkeypatch, tmp_path):
    """No network (the connection probe fails): the Hub client's retries are never started."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    probed = []

    def no_network(address, timeout=None):
        probed.append((address, timeout))
        raise OSError("Name or service not known")

    monkeypatch.setattr("socket.create_connection", no_network)
    with pytest.raises(WeightsError) as err:
        load_weights("hf://someone/hardnet/w.safetensors")
    assert str(err.value) == (
        "hf://someone/hardnet/w.safetensors: https://huggingface.co cannot be reached and the file is not in "
        "the local Hugging Face cache"
    )
    assert probed == [(("huggingface.co", 443), 3.0)]


def test_foreign_module_weights(hardnet, example_image, example_keypoints):
    """Any nn.Module with HardNet's layout (kornia's HardNet) is used as weights, not opened as a file."""
    kornia_feature = pytest.importorskip("kornia.feature")
    foreign = kornia_feature.HardNet(pretrained=False).eval()
    foreign.load_state_dict(hardnet.state_dict())
    before = {k: v.clone() for k, v in foreign.state_dict().items()}
    ours = HardNetDescriptor(hardnet, device="cpu").compute(example_image, example_keypoints)[1]
    theirs = HardNetDescriptor(foreign, device="cpu").compute(example_image, example_keypoints)[1]
    np.testing.assert_array_equal(ours, theirs)
    assert all(torch.equal(before[k], v) for k, v in foreign.state_dict().items())  # copied, not changed
    with pytest.raises(WeightsError, match="Linear module: not a HardNet state dict"):
        HardNetDescriptor(torch.nn.Linear(2, 2))


def test_saved_weights_get_normal_permissions(hardnet, tmp_path):
    import os
    import stat

    umask = os.umask(0o022)
    try:
        path = save_weights(hardnet, tmp_path / "w.safetensors")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # was 0600: unreadable for other users of a shared model
