"""Device and precision resolution: the CPU kinds, what "auto" becomes on each, int8's limits, the measured
batch sizes."""

from pathlib import Path

import pytest
import torch

from hardnet_desc.core.device import (
    BATCH_SIZES,
    CPU_AUTO,
    PRECISIONS,
    autocast,
    choose_precision,
    cpu_features,
    cpu_has_native_bf16,
    cpu_kind,
    default_batch_size,
    resolve_precision,
)

CPU = torch.device("cpu")


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="needs Linux's /proc/cpuinfo")
def test_cpu_features_agree_with_the_kernel_flags():
    flags = set(Path("/proc/cpuinfo").read_text().split())
    kernel = {"amx": "amx_tile", "avx512_bf16": "avx512_bf16", "avx512_vnni": "avx512_vnni", "avx2": "avx2"}
    assert cpu_features() == {name for name, flag in kernel.items() if flag in flags}
    assert cpu_has_native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


#: Feature sets of real CPUs -> (kind, auto for calibrated weights, for other weights, for training).
CPUS = {
    "Xeon Sapphire Rapids": ({"amx", "avx512_bf16", "avx512_vnni", "avx2"}, "amx", "int8", "bf16", "bf16"),
    "EPYC Zen 4": ({"avx512_bf16", "avx512_vnni", "avx2"}, "avx512_bf16+vnni", "int8", "bf16", "bf16"),
    "Xeon Cascade Lake": ({"avx512_vnni", "avx2"}, "avx512_vnni", "int8", "fp32", "fp32"),
    "EPYC Zen 3": ({"avx2"}, "avx2", "int8", "fp32", "fp32"),
    "ARM, old x86": (set(), "other", "fp32", "fp32", "fp32"),
}


@pytest.mark.parametrize("cpu", CPUS)
def test_auto_per_cpu_kind(monkeypatch, cpu):
    import hardnet_desc.core.device as device

    features, kind, calibrated, other, training = CPUS[cpu]
    monkeypatch.setattr(device, "cpu_features", lambda: frozenset(features))
    monkeypatch.setattr(device, "int8_available", lambda: True)
    assert cpu_kind() == kind and kind in CPU_AUTO
    assert choose_precision("auto", CPU, inference=True, int8_calibrated=True) == calibrated
    assert choose_precision("auto", CPU, inference=True, int8_calibrated=False) == other
    assert choose_precision("auto", CPU, int8_calibrated=True) == training  # training never runs int8
    assert resolve_precision("auto", CPU) == {"bf16": torch.bfloat16, "fp32": torch.float32}[training]
    monkeypatch.setattr(device, "int8_available", lambda: False)  # a torch without the int8 kernels
    assert choose_precision("auto", CPU, inference=True, int8_calibrated=True) == other
    for name in ("fp32", "bf16", "int8"):  # named precisions are what runs, on any kind
        assert choose_precision(name, CPU, inference=True) == name
    assert choose_precision("auto", torch.device("cuda"), inference=True, int8_calibrated=True) == "fp16"


def test_the_auto_table_only_names_what_can_run():
    for kind, names in CPU_AUTO.items():
        assert set(names) <= {"int8", "bf16"}, kind  # fp32 is the fallback, fp16 is CUDA's
        assert list(names) == sorted(names, key=["int8", "bf16"].index), kind  # int8 measured faster wherever both
    assert choose_precision("auto", torch.device("cuda")) == "fp16"  # no CUDA needed to resolve the name


def test_int8_is_inference_on_cpu_only():
    assert "int8" in PRECISIONS
    assert choose_precision("int8", CPU, inference=True) == "int8"
    with pytest.raises(ValueError, match="int8' is for inference"):
        resolve_precision("int8", CPU)  # what the trainer calls
    with pytest.raises(ValueError, match="CPU only"):
        choose_precision("int8", torch.device("cuda"), inference=True)
    x = torch.ones(4, 4)
    with autocast(CPU, "int8"):  # the int8 net quantizes itself: no autocast around it
        assert (x @ x).dtype == torch.float32


def test_batch_size_table(monkeypatch):
    import hardnet_desc.core.device as device

    monkeypatch.setattr(device, "cpu_features", lambda: frozenset({"amx", "avx512_bf16", "avx512_vnni", "avx2"}))
    for precision in ("fp32", "bf16", "int8"):  # a kind with its own measurements
        assert default_batch_size(CPU, precision) == BATCH_SIZES[("cpu:amx", precision)] >= 1
    monkeypatch.setattr(device, "cpu_features", lambda: frozenset({"avx2"}))
    for precision in ("fp32", "bf16", "int8"):  # a kind without: the CPU rows
        assert ("cpu:avx2", precision) not in BATCH_SIZES
        assert default_batch_size(CPU, precision) == BATCH_SIZES[("cpu", precision)] >= 1
    assert {key[0] for key in BATCH_SIZES} <= {"cpu", "cuda"} | {f"cpu:{kind}" for kind in CPU_AUTO}
    assert default_batch_size(torch.device("cuda"), "fp16") == BATCH_SIZES[("cuda", "fp16")]
    assert default_batch_size(torch.device("mps"), "fp32") >= 1  # unmeasured devices get a fallback
