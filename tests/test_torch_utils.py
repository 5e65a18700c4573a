"""The shared torch plumbing: devices, conversion, threads."""

import numpy as np
import pytest
import torch

from skfewshot._base import _l2_normalize
from skfewshot._torch_utils import (
    l2_normalize,
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


def test_tensor_normalisation_is_the_heads():
    A = np.array(
        [[3e20, 4e20, 0], [3e-30, 4e-30, 1e-31], [0, 0, 0], [1, 2, 2]],
        dtype=np.float32,
    )
    expected = _l2_normalize(A)
    got = l2_normalize(torch.as_tensor(A)[None])[0].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert expected[0, 0] == pytest.approx(0.6, rel=1e-6)


@pytest.mark.parametrize(
    "dtype, scales",
    [
        # 3000 * 5: the norm passes 65504; the last scale of each dtype: its
        # smallest subnormal (2**149 would overflow float32 in one step)
        (torch.float16, [1.0, 3e3, 1e-3, 2e-6, 2.0**-24]),
        (torch.bfloat16, [1.0, 1e30, 1e-30, 2.0**-133]),
        (torch.float32, [1.0, 1e20, 1e-13, 2.0**-130, 2.0**-149]),
        (torch.float64, [1.0, 1e200, 1e-200, 2.0**-1074]),
    ],
)
def test_l2_normalize_at_every_scale_of_the_dtype(dtype, scales):
    # (3, 4) at any scale its dtype holds is (0.6, 0.8); zero rows stay zero
    rows = [[3.0 * k, 4.0 * k] for k in scales] + [[0.0, 0.0]]
    got = l2_normalize(torch.tensor(rows, dtype=torch.float64).to(dtype))
    assert got.dtype == dtype
    expected = [[0.6, 0.8]] * len(scales) + [[0.0, 0.0]]
    rtol = 1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-6
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=rtol, atol=0)


def test_l2_normalize_gradient_of_a_zero_row_is_finite():
    A = torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    l2_normalize(A)[:, 0].sum().backward()
    # d (a / |a|) / d a at (3, 4): (|a|^2 - a a^T) / |a|^3, first row
    np.testing.assert_allclose(A.grad[1].numpy(), [16 / 125, -12 / 125], rtol=1e-12)
    assert torch.equal(A.grad[0], torch.tensor([1.0, 0.0], dtype=torch.float64))
