r"""Where a target computes and where random numbers come from: the device, dtype and seed
helpers (and the count check) that :mod:`pyro_flows.infer.target_density` and the samplers
share.

A target's device is what it says (a ``device`` attribute, which every
:class:`~pyro_flows.targets.Target` has and which follows ``target.to(...)``), else the device of
the tensors it holds (an ``nn.Module``'s parameters and buffers, a ``torch.distributions``
distribution's parameters, or those of the object of a bound method such as
``module.log_prob``); its dtype likewise (a ``dtype`` attribute, else the floating tensors it
holds). Random numbers for a device come from a ``torch.Generator`` on that device where torch
has one (CPU, CUDA), else from a CPU generator, and are then moved:

.. math::

    u = \texttt{rand}(\text{shape};\ g_{\text{seed}}) \ \text{on } g\text{'s device}
    \;\longrightarrow\; u \text{ on the target's device}.

:func:`_forked_rng` seeds torch's global RNGs (the CPU's and those of the CUDA devices involved)
inside a fork that restores them afterwards, for code that draws from the global RNG (a flow's
``sample``, a target's own noise).

Example:

>>> import torch
>>> g, seed = _generator(0)
>>> _draw("rand", (2,), g, dtype=torch.float64, device=torch.device("cpu")).shape
torch.Size([2])
>>> _stated_device_and_dtype(torch.nn.Linear(2, 2))
(device(type='cpu'), torch.float32)

References:

- PyTorch documentation, *Reproducibility* and ``torch.random.fork_rng``.
  https://pytorch.org/docs/stable/notes/randomness.html
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

DeviceLike = torch.device | str


def _check_int(value: object, name: str, minimum: int) -> int:
    """``value`` if it is an int (not a bool) of at least ``minimum``, else a clear error naming
    ``name``; the check of counts (``dim``, ``num_samples``, ``num_chains``...) shared by the
    samplers."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _fact(obj: object, *names: str) -> Any:
    """A known fact of the target (``None`` when absent, unknown or not a value)."""
    for name in names:
        try:
            value = getattr(obj, name, None)
        except (NotImplementedError, AttributeError, RuntimeError, ValueError):
            value = None
        if value is not None and not callable(value):
            return value
    return None


def _check_device(device: object, name: str = "device") -> torch.device | None:
    """``device`` as a ``torch.device`` (``None`` stays ``None``), or a clear error."""
    if device is None or isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(
            f"{name} must be a torch.device, a string such as 'cuda' or None, got "
            f"{type(device).__name__} ({device!r})"
        )
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(f"{name}={device!r} is not a device torch knows") from None


def _held_tensors(obj: object) -> Iterator[Tensor]:
    """Tensors a target holds: an ``nn.Module``'s parameters and buffers, a distribution's
    tensors, or those of the object of a bound method (``module.log_prob``)."""
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, nn.Module):
        yield from obj.parameters()
        yield from obj.buffers()
    elif isinstance(obj, torch.distributions.Distribution):
        yield from (v for v in vars(obj).values() if isinstance(v, Tensor))
    else:
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, nn.Module | torch.distributions.Distribution):
            yield from _held_tensors(owner)


def _stated_device_and_dtype(obj: object) -> tuple[torch.device | None, torch.dtype | None]:
    """Where ``obj`` computes, as far as it says: its ``device`` / ``dtype`` attributes, else
    the device of the tensors it holds and the dtype of the floating ones (``None``: unknown)."""
    device, dtype = None, None
    for owner in (obj, getattr(obj, "__self__", None)):
        if owner is None:
            continue
        stated = _fact(owner, "device")
        if isinstance(stated, torch.device | str) and device is None:
            device = _check_device(stated, "the target's device")
        stated = _fact(owner, "dtype")
        if isinstance(stated, torch.dtype) and stated.is_floating_point and dtype is None:
            dtype = stated
    if device is None or dtype is None:
        for t in _held_tensors(obj):
            device = device or t.device
            if dtype is None and t.is_floating_point():
                dtype = t.dtype
            if dtype is not None:
                break
    return device, dtype


def _generator(seed: int | None, device: DeviceLike | None = None) -> tuple[torch.Generator, int]:
    """A ``torch.Generator`` seeded with ``seed`` (``None``: a seed drawn from the global RNG),
    on ``device`` where torch has generators (CPU, CUDA), else on the CPU."""
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,), device="cpu").item())  # the CPU RNG
    elif isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__} ({seed!r})")
    device = _check_device(device)
    generator = None
    if device is not None and device.type != "cpu":
        try:
            generator = torch.Generator(device=device)
        except RuntimeError:  # e.g. 'meta': no generator there; draw on the CPU and move
            generator = None
    return (generator or torch.Generator()).manual_seed(seed), seed


def _draw(
    kind: str,
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator,
    *,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    """``torch.rand`` (``kind="rand"``) or ``torch.randn`` from ``generator``, drawn on the
    generator's device and moved to ``device``."""
    sample = torch.rand if kind == "rand" else torch.randn
    out = sample(tuple(shape), generator=generator, dtype=dtype, device=generator.device)
    return out.to(device)


@contextlib.contextmanager
def _forked_rng(seed: int | None, devices: Iterable[torch.device | None] = ()) -> Iterator[None]:
    """Seed torch's global RNGs with ``seed`` inside a fork that restores them afterwards: the
    CPU's and those of the CUDA devices among ``devices`` (``seed=None``: no fork, no seed)."""
    if seed is None:
        yield
        return
    cuda = sorted(
        {
            d.index if d.index is not None else torch.cuda.current_device()
            for d in devices
            if d is not None and d.type == "cuda"
        }
    )
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        # only the generators the fork restores: torch.manual_seed would also reseed every
        # other device's (CUDA devices not in ``devices``, MPS, XPU) without putting them back,
        # and its checks of those backends cost about 90 us per call on a CPU (the Gaussian
        # start forks once per loss evaluation)
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)  # lazy: queued until CUDA is initialised
        yield


def _module_device_and_dtype(module: object) -> tuple[torch.device | None, torch.dtype | None]:
    """The device of a module's first parameter or buffer and the dtype of its first floating
    one (``None`` for a module without tensors or a non-module)."""
    if not isinstance(module, nn.Module):
        return None, None
    return _stated_device_and_dtype(module)
