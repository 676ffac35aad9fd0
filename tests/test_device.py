"""Device and precision resolution: what "auto" becomes, int8's limits, the measured batch sizes."""

from pathlib import Path

import pytest
import torch

from hardnet_desc.device import (
    BATCH_SIZES,
    PRECISIONS,
    autocast,
    choose_precision,
    cpu_has_native_bf16,
    default_batch_size,
    resolve_precision,
)

CPU = torch.device("cpu")


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="needs Linux's /proc/cpuinfo")
def test_native_bf16_detection_agrees_with_the_kernel_flags():
    flags = Path("/proc/cpuinfo").read_text().split()
    assert cpu_has_native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_auto_is_bf16_only_where_the_cpu_has_it(monkeypatch):
    import hardnet_desc.device as device

    assert choose_precision("auto", CPU) == ("bf16" if cpu_has_native_bf16() else "fp32")
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    assert choose_precision("auto", CPU) == "fp32"
    assert resolve_precision("auto", CPU) == torch.float32
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert choose_precision("auto", CPU) == "bf16"
    assert choose_precision("auto", CPU, inference=True, int8_ready=lambda: True) == "bf16"


def test_auto_takes_int8_for_inference_only_without_native_bf16(monkeypatch):
    import hardnet_desc.device as device

    asked = []

    def ready() -> bool:
        asked.append(1)
        return True

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    assert choose_precision("auto", CPU, inference=True, int8_ready=ready) == "int8"
    assert choose_precision("auto", CPU, inference=True, int8_ready=lambda: False) == "fp32"
    assert choose_precision("auto", CPU, inference=True) == "fp32"  # nobody said int8 can run
    assert choose_precision("auto", CPU, int8_ready=ready) == "fp32"  # training never runs int8
    assert choose_precision("auto", torch.device("cuda"), inference=True, int8_ready=ready) == "fp16"
    assert choose_precision("fp32", CPU, inference=True, int8_ready=ready) == "fp32"
    assert len(asked) == 1  # asked only where it decides
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


def test_batch_size_table():
    for precision in ("fp32", "bf16", "int8"):
        assert default_batch_size(CPU, precision) == BATCH_SIZES[("cpu", precision)] >= 1
    assert default_batch_size(torch.device("cuda"), "fp16") == BATCH_SIZES[("cuda", "fp16")]
    assert default_batch_size(torch.device("mps"), "fp32") >= 1  # unmeasured devices get a fallback
