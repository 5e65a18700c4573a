"""Torch plumbing shared by every estimator: devices, conversion, threads.

Private module: one place for what every estimator needs, so no estimator
re-implements device resolution or numpy <-> tensor conversion. The names
differ from skorch's ``to_tensor`` / ``to_numpy`` on purpose: these do less.
Helpers that need numpy only live in :mod:`skfewshot._utils`.
"""

from __future__ import annotations

import contextlib
import importlib.util

import numpy as np
import torch

from skfewshot._base import _accurate_squares

__all__ = [
    "amp_context",
    "autocast_state",
    "first_float_weight",
    "float32_settings",
    "l2_normalize",
    "seeded_init",
    "seeded_torch",
    "single_thread",
    "resolve_device",
    "to_device_tensor",
    "to_host_array",
    "torch_dtype",
]

_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _backend_available(device_type: str) -> bool:
    """Whether torch can run on ``device_type`` here (CUDA, MPS, XPU, XLA, ...)."""
    if device_type == "mps":
        return _mps_available()
    if device_type == "xla":  # registered by the torch_xla package, if installed
        return importlib.util.find_spec("torch_xla") is not None
    backend = getattr(torch, device_type, None)
    available = getattr(backend, "is_available", None)
    return bool(callable(available) and available())


def resolve_device(device="auto") -> torch.device:
    """Turn a device spec into a ``torch.device``, failing early and clearly.

    ``"auto"`` picks CUDA, then Apple MPS, then CPU. An explicit device that
    this machine cannot run on raises ``ValueError`` naming it, before any
    tensor moves there: a backend that is absent or unavailable (``"cuda"``
    without CUDA, ``"xpu"``, ``"xla"`` without ``torch_xla``...), an index
    beyond the devices present, or ``"meta"`` (which holds no data: moving a
    module there discards its weights).

    Examples
    --------
    >>> from skfewshot._torch_utils import resolve_device
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("meta")
    Traceback (most recent call last):
    ...
    ValueError: device='meta' holds no data: ...
    """
    if isinstance(device, torch.device):
        spec = device
    elif device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    else:
        try:
            spec = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(
                f"device={device!r} is not a valid torch device; use 'auto', "
                "'cpu', 'cuda', 'cuda:N' or 'mps'."
            ) from exc
    name = str(device)
    if spec.type == "cpu":
        return spec
    if spec.type == "meta":
        raise ValueError(
            f"device={name!r} holds no data: a module moved there loses its "
            "weights and computes nothing; use 'auto', 'cpu', 'cuda' or 'mps'."
        )
    if not _backend_available(spec.type):
        what = {"cuda": "CUDA", "mps": "Apple MPS"}.get(spec.type, spec.type)
        raise ValueError(
            f"device={name!r} was requested but {what} is not available on this "
            "machine (torch has no working backend for it); use device='auto' "
            "or device='cpu'."
        )
    count = getattr(getattr(torch, spec.type, None), "device_count", None)
    if spec.index is not None and callable(count) and spec.index >= count():
        raise ValueError(
            f"device={name!r} was requested but only {count()} "
            f"{spec.type.upper()} device(s) are present."
        )
    return spec


def first_float_weight(module: torch.nn.Module) -> torch.Tensor | None:
    """The first floating-point parameter of ``module`` (None when it has none):
    the device and dtype its weights live in, for the tensors that callers
    build beside them (the command line's ``dtype``, a whitening map)."""
    return next((p for p in module.parameters() if p.is_floating_point()), None)


def l2_normalize(A: torch.Tensor) -> torch.Tensor:
    """Rows (last axis) of ``A`` scaled to unit Euclidean norm, whatever their scale.

    The tensor twin of ``skfewshot._base._l2_normalize``, for every torch
    caller (the batched episodes, :class:`~skfewshot.models.BackboneEnsemble`):
    a row whose squared norm would overflow (float32 rows around ``1e20``,
    float16 rows of norm above 65504) or lose precision to underflow (rows
    around ``1e-30``) is first multiplied by the power of two that brings its
    largest absolute entry into [0.5, 1), which is exact, so the result does
    not depend on the scale of the rows; other rows are divided by their norm
    as computed. All-zero rows stay zero, with a finite gradient (the row is
    divided by one): unlike :func:`torch.nn.functional.normalize`, no ``eps``
    leaves tiny rows unnormalised.

    Examples
    --------
    >>> import torch
    >>> from skfewshot._torch_utils import l2_normalize
    >>> l2_normalize(torch.tensor([[3e20, 4e20], [3e-30, 4e-30], [0.0, 0.0]]))
    tensor([[0.6000, 0.8000],
            [0.6000, 0.8000],
            [0.0000, 0.0000]])
    """
    squares = A.square().sum(dim=-1)
    accurate = _accurate_squares(squares, A.shape[-1], torch.finfo(A.dtype))
    if not bool(accurate.all()):
        # the exponent is a constant of the row: no gradient flows through it
        exponent = torch.frexp(A.detach().abs().amax(dim=-1)).exponent
        exponent = -torch.where(accurate, 0, exponent).unsqueeze(-1)
        # in two halves: torch.ldexp computes 2**e in A's dtype, where the
        # whole power would overflow for the tiniest rows (float16 below 2**-16)
        half = torch.div(exponent, 2, rounding_mode="floor")
        A = torch.ldexp(torch.ldexp(A, half.to(A.dtype)), (exponent - half).to(A.dtype))
        squares = A.square().sum(dim=-1)
    # sqrt only of positive squares: a zero row's gradient stays finite
    positive = squares > 0
    norms = torch.where(positive, squares, 1).sqrt()
    return A / norms.unsqueeze(-1)


def torch_dtype(dtype) -> torch.dtype:
    """Map ``"float32"`` / ``np.float32`` / ``torch.float32`` to a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    key = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    try:
        return _DTYPES[key]
    except KeyError:
        raise ValueError(
            f"dtype={dtype!r} is not supported; use one of {sorted(_DTYPES)}."
        ) from None


def to_device_tensor(X, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """Array-like or tensor -> tensor on ``device`` with ``dtype``."""
    if isinstance(X, torch.Tensor):
        return X.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(X), dtype=dtype, device=device)


def to_host_array(t, dtype=np.float32) -> np.ndarray:
    """Tensor (any device, any dtype) -> numpy array of ``dtype`` on the CPU."""
    t = t.detach().to("cpu")
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    return t.numpy().astype(dtype, copy=False)


#: torch >= 2.9's per-operator float32 precision settings (``torch.backends.X``)
_FP32_SETTINGS = (
    "",
    "cuda.matmul",
    "cudnn.conv",
    "cudnn.rnn",
    "mkldnn.matmul",
    "mkldnn.conv",
    "mkldnn.rnn",
)


#: autocast's lower precision with ``amp=True``, fixed per device type (torch's
#: own, ``torch.set_autocast_dtype``, is a thread-local setting a caller may change)
_AMP_DTYPES = {
    "cpu": torch.bfloat16,
    "cuda": torch.float16,
    "mps": torch.float16,
}
#: device types torch may autocast for (those of a torch build that has them)
_AUTOCAST_TYPES = ("cpu", "cuda", "mps", "xpu", "hpu", "xla", "mtia", "maia", "ipu")


def amp_context(device_type: str, enabled: bool):
    """``torch.autocast`` for ``device_type``, on (mixed precision) or off.

    On: float16 on CUDA and MPS, bfloat16 on the CPU, whatever
    ``torch.set_autocast_dtype`` says (other device types: torch's autocast
    dtype for them, which :func:`autocast_state` reports). Off: a caller's
    autocast for ``device_type`` is switched off inside the block, so the
    block computes in the dtypes of its tensors. Where this torch cannot
    autocast on ``device_type``, off is a no-op and on raises torch's
    ``RuntimeError``.

    Examples
    --------
    >>> import torch
    >>> from skfewshot._torch_utils import amp_context, autocast_state
    >>> with torch.autocast("cpu"), amp_context("cpu", False):
    ...     autocast_state()
    ''
    >>> with amp_context("cpu", True):
    ...     autocast_state()
    'cpu=torch.bfloat16'
    """
    dtype = _AMP_DTYPES.get(device_type)
    try:
        return torch.autocast(device_type, dtype=dtype, enabled=enabled)
    except RuntimeError:  # no autocast for this device type in this torch
        if enabled:
            raise
        return contextlib.nullcontext()


def autocast_state() -> str:
    """The autocast settings of this thread that change results, for cache keys.

    Every device type on which autocast is on, with its dtype (``""`` where
    it is on nowhere): an encoder called under a caller's
    ``torch.autocast`` computes in lower precision, so its features must not
    be served to a call in full precision, nor features of one dtype to a
    call under another.

    Examples
    --------
    >>> import torch
    >>> from skfewshot._torch_utils import autocast_state
    >>> autocast_state()
    ''
    >>> with torch.autocast("cpu", dtype=torch.bfloat16):
    ...     autocast_state()
    'cpu=torch.bfloat16'
    """
    if not hasattr(torch.amp, "is_autocast_available"):  # torch < 2.4
        states = (
            ("cpu", torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype),
            ("cuda", torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype),
        )
        return ",".join(f"{t}={dtype()}" for t, on, dtype in states if on)
    types = (*_AUTOCAST_TYPES, torch._C._get_privateuse1_backend_name())
    return ",".join(
        f"{t}={torch.get_autocast_dtype(t)}"
        for t in types
        if torch.amp.is_autocast_available(t) and torch.is_autocast_enabled(t)
    )


def float32_settings() -> str:
    """The precision settings that change float32 results, for cache keys.

    On torch >= 2.9, every per-operator ``fp32_precision`` setting
    (``torch.backends``' own, ``cuda.matmul``, ``cudnn.conv`` / ``rnn``,
    ``mkldnn.matmul`` / ``conv`` / ``rnn``): cuDNN computes float32
    convolutions in TF32 by default (about 1e-3 relative off full float32) and
    oneDNN may use bf16, so features computed under one setting must not be
    served under another. These are read rather than the legacy getters,
    which raise once a user has set the new API and the old one apart. Older
    torch: ``torch.get_float32_matmul_precision()`` and
    ``torch.backends.cudnn.allow_tf32``.

    Examples
    --------
    >>> from skfewshot._torch_utils import float32_settings
    >>> isinstance(float32_settings(), str)
    True
    """
    backends = torch.backends
    if hasattr(getattr(backends.cuda, "matmul", None), "fp32_precision"):
        parts = []
        for name in _FP32_SETTINGS:
            module = backends
            for attr in filter(None, name.split(".")):
                module = getattr(module, attr, None)
            value = getattr(module, "fp32_precision", None)
            parts.append(f"{name or 'all'}={value}")
        return "|".join(parts)
    return (
        f"matmul={torch.get_float32_matmul_precision()}"
        f"|cudnn_tf32={backends.cudnn.allow_tf32}"
    )


@contextlib.contextmanager
def seeded_torch(seed, device=None):
    """Seed torch's generators for the block, then give the caller's back.

    ``device`` is where the block computes: on the CPU only the CPU generator
    is seeded (``torch.manual_seed`` would also reseed every CUDA generator,
    which ``fork_rng`` restores only for the devices it forks); on CUDA, or
    with None, every generator is seeded and every CUDA device's forked.
    """
    everywhere = device is None or device.type == "cuda"
    devices = list(range(torch.cuda.device_count())) if everywhere else []
    with torch.random.fork_rng(devices=devices):
        if device is not None and device.type == "cpu":
            torch.random.default_generator.manual_seed(seed)
        else:
            torch.manual_seed(seed)
        yield


def seeded_init(make_module, seed):
    """``make_module()`` built with torch seeded by ``seed``: seeded initial weights.

    Every generator is seeded (a module may draw its weights on a GPU) and the
    caller's random state is left as it was; the same ``seed`` gives the same
    initial weights on the CPU.
    """
    with seeded_torch(seed):
        return make_module()


@contextlib.contextmanager
def single_thread():
    """Run torch's CPU ops on one thread inside the block, then restore the count.

    For tiny problems (a few-shot head on one episode) thread start-up and
    spin-waiting cost more than the arithmetic, and on a busy machine torch's
    OpenMP threads make each small op 10 to 100 times slower.
    """
    previous = torch.get_num_threads()
    if previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
