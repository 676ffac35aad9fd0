"""Image reading and conversion to grey, for every accepted input form."""

import shutil
import struct
import zlib

import cv2
import numpy as np
import pytest
import torch

from hardnet_desc import HardNetDescriptor
from hardnet_desc.core.image import read_image, to_grey_numpy, to_grey_tensor, to_uint8


def test_read_image(example_files, example_image, tmp_path):
    image = read_image(example_files[0])
    assert image.dtype == np.uint8 and image.shape == (520, 800, 3)
    np.testing.assert_array_equal(image, example_image)
    # 16-bit files keep their depth
    deep = (np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    read = read_image(tmp_path / "deep.png")
    assert read.dtype == np.uint16
    np.testing.assert_array_equal(to_grey_numpy(read), deep)


def test_read_a_float_tiff(example_image, tmp_path):
    """A one-channel float TIFF (scientific cameras): OpenCV's colour read fails on it ("cannot decode" before);
    read as stored and made BGR, it is described as the same photo in 8 bits is."""
    grey = cv2.cvtColor(example_image, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / "grey.tif"), grey.astype(np.float32) / 255)
    cv2.imwrite(str(tmp_path / "bgra.tif"), cv2.cvtColor(example_image, cv2.COLOR_BGR2BGRA).astype(np.float32) / 255)
    image = read_image(tmp_path / "grey.tif")
    assert image.dtype == np.float32 and image.shape == (*grey.shape, 3)
    np.testing.assert_allclose(to_grey_numpy(image), grey / 255, atol=1e-6)
    assert read_image(tmp_path / "bgra.tif").shape == example_image.shape
    cv2.imwrite(str(tmp_path / "grey64.tif"), grey.astype(np.float64) / 255)  # cvtColor takes no float64
    np.testing.assert_allclose(to_grey_numpy(read_image(tmp_path / "grey64.tif")), grey / 255, atol=1e-6)
    hardnet = HardNetDescriptor(device="cpu", precision="fp32")
    kps = cv2.SIFT_create(300).detect(grey, None)
    _, from_float = hardnet.compute(image, kps)
    _, from_uint8 = hardnet.compute(grey, kps)
    assert np.abs(from_float - from_uint8).max() < 1e-3


def test_read_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such image file: .*missing.jpg"):
        read_image(tmp_path / "missing.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="cannot decode image file: .*bad.jpg"):
        read_image(bad)
    # a PNG header of 40000 x 40000 pixels: OpenCV's size assertion leaked as a cv2.error (exit 1 on the CLI)
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    huge = tmp_path / "huge.png"
    huge.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(bytes(1000))) + chunk(b"IEND", b""))
    with pytest.raises(ValueError, match=r"cannot read image file .*huge.png: more pixels than OpenCV reads \(2\^30\)"):
        read_image(huge)


def test_grey_forms_agree(example_image):
    bgr = example_image
    ref = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    rgb_chw = torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).permute(2, 0, 1)
    forms = {
        "bgr": bgr,
        "grey": ref,
        "grey (H, W, 1)": ref[:, :, None],
        "bgra": cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA),
        "torch rgb (3, H, W)": rgb_chw,
        "torch rgb (1, 3, H, W)": rgb_chw[None],
        "torch grey (H, W)": torch.from_numpy(ref),
        "torch grey (1, 1, H, W)": torch.from_numpy(ref)[None, None],
    }
    for name, image in forms.items():
        grey = to_grey_numpy(image)
        assert grey.dtype == np.uint8, name
        np.testing.assert_array_equal(grey, ref, err_msg=name)


def test_float_types_become_float32(example_image):
    ref = cv2.cvtColor(example_image.astype(np.float32) / 255, cv2.COLOR_BGR2GRAY)
    for image in (example_image / 255.0, (example_image / 255.0).astype(np.float16)):
        grey = to_grey_numpy(image)
        assert grey.dtype == np.float32
        np.testing.assert_allclose(grey, ref, atol=2e-3)
    bf16 = torch.from_numpy(ref).to(torch.bfloat16)
    np.testing.assert_allclose(to_grey_numpy(bf16), ref, atol=1e-2)


@pytest.mark.parametrize(
    "image, error, match",
    [
        (torch.zeros(2, 3, 16, 16), ValueError, "one image at a time"),
        (torch.zeros(2, 16, 16), ValueError, "1 or 3 channels first"),
        (np.zeros((16, 16, 2), np.uint8), ValueError, r"\(H, W\) grey or \(H, W, 3\) BGR"),
        (np.zeros((16,), np.uint8), ValueError, r"\(H, W\) grey or \(H, W, 3\) BGR"),
        (np.zeros((1, 16), np.uint8), ValueError, "too small"),
        (np.zeros((16, 16), np.int32), TypeError, "got int32"),
        (np.zeros((16, 16), bool), TypeError, "got bool"),
        (np.array([[0.0, np.inf], [0.0, 0.0]], np.float32), ValueError, "NaN or inf"),
        ("image.png", TypeError, "numpy array or torch tensor, got str"),
    ],
)
def test_bad_images(image, error, match):
    with pytest.raises(error, match=match):
        to_grey_numpy(image)


def test_grey_tensor_scaling(example_image):
    grey = cv2.cvtColor(example_image, cv2.COLOR_BGR2GRAY)
    t = to_grey_tensor(example_image)
    assert t.shape == (1, 1, 520, 800) and t.dtype == torch.float32
    np.testing.assert_allclose(t[0, 0].numpy(), grey / 255.0, atol=1e-6)
    deep = grey.astype(np.uint16) * 257
    np.testing.assert_allclose(to_grey_tensor(deep)[0, 0].numpy(), grey / 255.0, atol=1e-6)
    floats = grey.astype(np.float32) * 3.0  # any float range is kept as it is
    np.testing.assert_array_equal(to_grey_tensor(floats)[0, 0].numpy(), floats)


def test_to_uint8(example_image):
    grey = cv2.cvtColor(example_image, cv2.COLOR_BGR2GRAY)
    assert to_uint8(grey) is grey
    np.testing.assert_array_equal(to_uint8(grey.astype(np.uint16) * 257), grey)
    np.testing.assert_array_equal(to_uint8(grey / 255.0), grey)  # 0..1 floats
    np.testing.assert_array_equal(to_uint8(grey.astype(np.float32)), grey)  # 0..255 floats
    assert to_uint8(np.full((4, 4), 300.0, np.float32)).max() == 255
    assert not to_uint8(np.full((4, 4), -3.0, np.float32)).any()  # constant: no stretch to divide by


def test_float_images_are_detected_on_their_own_range(example_image):
    # Floats a little outside 0..1 (a cubic resize overshoots) are still 0..1; -1..1, standardised and 0..65535
    # floats are stretched. Before, the first were taken as 0..255 (a black image: no keypoint at all), the others
    # clipped to half an image or saturated.
    grey = cv2.cvtColor(example_image, cv2.COLOR_BGR2GRAY)
    unit = grey.astype(np.float32) / 255
    enlarged = cv2.resize(unit, None, fx=1.3, fy=1.3, interpolation=cv2.INTER_CUBIC)
    assert enlarged.max() > 1 and enlarged.min() < 0  # the overshoot
    want = cv2.resize(grey, None, fx=1.3, fy=1.3, interpolation=cv2.INTER_CUBIC)
    assert np.abs(to_uint8(enlarged).astype(int) - want).max() <= 1
    hn = HardNetDescriptor(device="cpu")
    assert len(hn.detect(enlarged)) > 0.95 * len(hn.detect(want)) > 1000
    stretched = (grey.astype(np.float64) - grey.min()) * 255 / (int(grey.max()) - int(grey.min()))
    for other in (unit * 2 - 1, (unit - unit.mean()) / unit.std(), grey.astype(np.float32) * 257):
        assert np.abs(to_uint8(other).astype(float) - stretched).max() <= 1
    # beyond 2^32 or below 2^-8 the values were first scaled into [0.5, 1) and then taken as 0..1 (1e12 gave up to
    # 18 levels less, 1e-30 an image at half brightness): they are stretched like the others
    for scale in (1e12, 1e300, 1e-30):
        assert np.abs(to_uint8(grey.astype(np.float64) * scale).astype(float) - stretched).max() <= 1
    # big-endian data: "image dtype must be uint8, uint16 or float, got >f4"
    np.testing.assert_array_equal(to_uint8(grey.astype(">f4")), grey)
    np.testing.assert_array_equal(to_uint8((grey.astype(np.uint16) * 257).astype(">u2")), grey)


def _rgb_tensor(bgr: np.ndarray) -> torch.Tensor:
    """A BGR ``(H, W, 3)`` array as kornia's RGB ``(3, H, W)`` tensor."""
    return torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).permute(2, 0, 1)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "float64", "tiny"])
def test_device_grey_equals_opencv(example_image, dtype):
    """The grey conversion that runs on a GPU (here on CPU tensors): OpenCV's, bit for bit for integer images."""
    from hardnet_desc.core.image import _grey_on_device

    image = {"uint8": example_image, "uint16": example_image.astype(np.uint16) * 257,
             "float32": example_image.astype(np.float32) / 3, "float64": example_image * 1e40,
             "tiny": example_image.astype(np.float32) * 1e-42}[dtype]  # subnormal float32: scaled up first
    for tensor in (_rgb_tensor(image), _rgb_tensor(image)[None], _rgb_tensor(image)[1]):
        ref, got = to_grey_tensor(tensor), _grey_on_device(tensor)
        assert got.shape == ref.shape == (1, 1, 520, 800) and got.dtype == torch.float32
        if dtype.startswith("uint"):
            torch.testing.assert_close(got, ref, rtol=0, atol=0)
        else:  # OpenCV sums the channels in another order (or with FMA)
            torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6 * float(ref.abs().max()))


@pytest.mark.parametrize(("image", "error", "match"), [
    (torch.zeros(2, 3, 8, 8), ValueError, "one image at a time"),
    (torch.zeros(4, 8, 8), ValueError, "1 or 3 channels first"),
    (torch.zeros(1, 1, 1, 8, 8), ValueError, r"\(H, W\), \(C, H, W\) or \(1, C, H, W\)"),
    (torch.zeros(3, 1, 8), ValueError, "too small"),
    (torch.zeros(8, 8, dtype=torch.int32), TypeError, "uint8, uint16 or float"),
    (torch.full((8, 8), float("nan")), ValueError, "NaN or inf"),
    (torch.full((3, 8, 8), float("inf"), dtype=torch.float64), ValueError, "NaN or inf"),
])
def test_device_grey_refuses_what_the_opencv_path_refuses(image, error, match):
    from hardnet_desc.core.image import _grey_on_device

    with pytest.raises(error, match=match):
        _grey_on_device(image)
    with pytest.raises(error):
        to_grey_tensor(image)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_image_becomes_grey_on_the_gpu(example_image):
    """A CUDA image is converted on the GPU (no copy to the host): uint8 bit for bit as OpenCV, floats to rounding."""
    for image in (example_image, example_image.astype(np.uint16) * 257):
        t = _rgb_tensor(image).cuda()
        grey = to_grey_tensor(t, "cuda")
        assert grey.device.type == "cuda"
        torch.testing.assert_close(grey.cpu(), to_grey_tensor(image), rtol=0, atol=0)
    floats = _rgb_tensor(example_image.astype(np.float32) / 255)
    on_gpu = to_grey_tensor(floats.cuda(), "cuda")
    torch.testing.assert_close(on_gpu.cpu(), to_grey_tensor(floats), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="NaN or inf"):
        to_grey_tensor(torch.full((3, 8, 8), float("nan"), device="cuda"), "cuda")


def test_list_images_follows_linked_folders_once(example_files, tmp_path):
    """A folder of links to photo folders (how datasets are often assembled): the linked photos were skipped
    without a word; each real folder is listed once, and a link back up the tree does not loop."""
    from hardnet_desc.data.images import list_images

    elsewhere, root = tmp_path / "elsewhere", tmp_path / "photos"
    (elsewhere / "deep").mkdir(parents=True)
    (root / "own").mkdir(parents=True)
    shutil.copy(example_files[0], root / "own" / "a.jpg")
    shutil.copy(example_files[1], elsewhere / "deep" / "b.jpg")
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    (root / "linked_again").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "loop").symlink_to(root, target_is_directory=True)
    (root / "dangling.jpg").symlink_to(tmp_path / "missing.jpg")
    (root / "all").symlink_to(root / "own", target_is_directory=True)  # the folder's own name wins over a link's
    (root / "own" / "up").symlink_to(tmp_path, target_is_directory=True)  # a link above the folder: not followed
    names = [p.relative_to(root).as_posix() for p in list_images(root)]
    assert names == ["linked/deep/b.jpg", "own/a.jpg"], names
