"""The shared torch plumbing: devices, conversion, threads."""

import numpy as np
import pytest
import torch

from skfewshot._torch_utils import (
    resolve_device,
    single_thread,
    to_device_tensor,
    to_host_array,
    torch_dtype,
)


def test_resolve_device_auto_and_cpu():
    expected = "cuda" if torch.cuda.is_available() else None
    assert resolve_device("cpu") == torch.device("cpu")
    if expected:
        assert resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_resolve_device_missing_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available on this machine"):
        resolve_device("cuda:0")


def test_resolve_device_rejects_nonsense():
    with pytest.raises(ValueError, match="is not a valid torch device"):
        resolve_device("gpu please")


def test_conversions_round_trip():
    X = np.arange(6, dtype=np.float64).reshape(2, 3)
    t = to_device_tensor(X, dtype=torch.float32)
    assert t.dtype == torch.float32
    out = to_host_array(t.to(torch.bfloat16))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, X)
    assert torch_dtype("float64") is torch.float64
    assert torch_dtype(np.float32) is torch.float32
    with pytest.raises(ValueError, match="dtype='int8' is not supported"):
        torch_dtype("int8")


def test_single_thread_restores_the_thread_count():
    before = torch.get_num_threads()
    with single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    "device, match",
    [
        ("meta", "device='meta' holds no data"),
        ("xla", "device='xla' was requested but xla is not available"),
        ("hpu", "device='hpu' was requested but hpu is not available"),
        (torch.device("meta"), "device='meta' holds no data"),
    ],
)
def test_resolve_device_rejects_devices_this_machine_cannot_run(device, match):
    with pytest.raises(ValueError, match=match):
        resolve_device(device)


@pytest.mark.skipif(torch.xpu.is_available(), reason="checks the no-XPU message")
def test_resolve_device_missing_xpu_is_a_clear_error():
    with pytest.raises(ValueError, match="device='xpu:0' was requested but xpu is"):
        resolve_device("xpu:0")
