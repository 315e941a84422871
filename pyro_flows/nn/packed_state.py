"""Loading state dicts saved before a module packed several parameters into one tensor.

Modules that keep several small parameters in one tensor (fewer tensors for a per-tensor
optimiser to step: see :mod:`pyro_flows.nn.packed_linear`) serve the old names as views and
call :func:`pack_split_entries` from ``_load_from_state_dict``, so a state dict with the old,
separate keys still loads.

Example:

>>> import torch
>>> state = {"m.a": torch.zeros(2), "m.b": torch.ones(2), "other": torch.ones(1)}
>>> pack_split_entries(state, "m.", "ab", ("a", "b"), torch.stack)
>>> sorted(state), state["m.ab"].tolist()
(['m.ab', 'other'], [[0.0, 0.0], [1.0, 1.0]])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

__all__ = ["pack_split_entries"]


def pack_split_entries(
    state_dict: dict,
    prefix: str,
    packed: str,
    parts: Sequence[str],
    join: Callable[[list[Tensor]], Tensor],
) -> None:
    """In place: if ``state_dict`` has ``prefix + part`` for every one of ``parts`` and no
    ``prefix + packed``, replace those entries by ``prefix + packed = join([entries])``.
    Anything else is left for ``load_state_dict`` to report (a missing part stays missing)."""
    keys = [prefix + part for part in parts]
    if prefix + packed in state_dict or not all(key in state_dict for key in keys):
        return
    state_dict[prefix + packed] = join([state_dict.pop(key) for key in keys])
