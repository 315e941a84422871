"""Any ``torch.distributions`` / Pyro transform on vectors, inside a :class:`~pyro_flows.Flow`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Transform
from torch.distributions.constraints import Constraint
from torch.distributions.transforms import ComposeTransform, IndependentTransform, _InverseTransform

from .base import FlowTransform

#: A location inside the wrapped transform: attribute names (``str``) and list indices (``int``)
#: walked from the transform itself, e.g. ``("parts", 0, "scale")``.
Path = tuple[str | int, ...]

# attributes that hold per-call caches, never state (Transform's identity cache)
_CACHE_ATTRIBUTES = frozenset({"_cached_x_y"})


def _children(obj: Any) -> Iterator[tuple[str | int, Any]]:
    """The ``(key, value)`` pairs the tensor search walks into: the attributes of transforms,
    distributions and constraints, and the items of lists and tuples."""
    if isinstance(obj, list | tuple):
        yield from enumerate(obj)
    elif isinstance(obj, Transform | Distribution | Constraint):
        for key, value in vars(obj).items():
            if key not in _CACHE_ATTRIBUTES:
                yield key, value


def _find_state(root: Transform) -> tuple[dict[Path, Tensor], dict[Path, nn.Module]]:
    """Every tensor and every ``nn.Module`` reachable from ``root`` (see :func:`_children`),
    by the path that first reaches it; modules are not entered (they register their own state),
    and a tensor reachable by several paths is listed under each (so each place is rebound)."""
    tensors: dict[Path, Tensor] = {}
    modules: dict[Path, nn.Module] = {}
    seen: set[int] = {id(root)}
    stack: list[tuple[Path, Any]] = [((), root)]
    while stack:
        path, obj = stack.pop(0)
        for key, value in _children(obj):
            child = (*path, key)
            if isinstance(value, Tensor):
                if not isinstance(obj, tuple):  # a tuple's items cannot be rebound in place
                    tensors[child] = value
            elif isinstance(value, nn.Module):
                if id(value) not in seen:
                    modules[child] = value
                    seen.add(id(value))
            elif id(value) not in seen and isinstance(
                value, list | tuple | Transform | Distribution | Constraint
            ):
                seen.add(id(value))
                stack.append((child, value))
    return tensors, modules


def _state_name(path: Path, taken: set[str]) -> str:
    """A readable, unique ``state_dict`` name for ``path``: ``transform_parts_0_scale``."""
    name = "_".join(["transform", *(str(key).strip("_") for key in path)])
    unique, n = name, 1
    while unique in taken:
        n += 1
        unique = f"{name}_{n}"
    return unique


def _resolve(root: Any, path: Path) -> Any:
    for key in path:
        root = root[key] if isinstance(key, int) else getattr(root, key)
    return root


def jacobian_sign(transform: Transform, input_dim: int) -> int | Tensor:
    r"""The sign of the Jacobian determinant of a ``torch.distributions`` transform on vectors of
    size ``input_dim``, from torch's ``sign`` (which describes *elementwise* monotonicity).

    An elementwise transform (``domain.event_dim == 0``) with signs :math:`s_i` has
    :math:`\operatorname{sign}\det = \prod_{i=1}^{D} s_i` (:math:`s^D` for one scalar sign);
    ``IndependentTransform`` and ``_InverseTransform`` (same sign as the forward) are looked
    through, a ``ComposeTransform`` multiplies its parts' signs, and any other transform on
    vectors (a Pyro ``TransformModule`` such as ``AffineAutoregressive``) reports its own.

    Cost: reads the ``sign`` of every part once; a product over :math:`D` for tensor signs.

    :raises NotImplementedError: if a transform on the way defines no ``sign``.

    Example:

    >>> from torch.distributions.transforms import AffineTransform
    >>> jacobian_sign(AffineTransform(0.0, -2.0), 3), jacobian_sign(AffineTransform(0.0, -2.0), 2)
    (-1, 1)
    """
    if isinstance(transform, ComposeTransform):
        sign: int | Tensor = 1
        for part in transform.parts:
            sign = sign * jacobian_sign(part, input_dim)
        return sign
    if isinstance(transform, IndependentTransform):
        return jacobian_sign(transform.base_transform, input_dim)
    if isinstance(transform, _InverseTransform) and transform.inv is not None:
        return jacobian_sign(transform.inv, input_dim)
    try:
        sign = transform.sign
    except NotImplementedError:
        raise NotImplementedError(
            f"{type(transform).__name__} defines no sign: the sign of its Jacobian determinant "
            "is unknown"
        ) from None
    if transform.domain.event_dim > 0:
        return sign
    if isinstance(sign, Tensor):
        event = torch.Size([input_dim])
        return sign.expand(torch.broadcast_shapes(sign.shape, event)).prod(-1)
    return sign**input_dim


class WrappedTransform(FlowTransform):
    """Adapter giving a foreign ``Transform`` the two-direction interface of pyro_flows.

    Elementwise transforms (``domain.event_dim == 0``, e.g. ``ExpTransform``) have their
    log-determinant summed over the last dimension. The foreign transform's own cache setting is
    respected; pyro_flows adds none.

    **State.** The wrapped transform's tensors (``AffineTransform``'s ``loc`` and ``scale``, the
    parts of a ``ComposeTransform``, the distribution of a ``CumulativeDistributionTransform``,
    ...) are registered on this module under names like ``transform_scale`` (buffers; an
    ``nn.Parameter`` stays a parameter) and rebound into the wrapped transform whenever the
    module converts them: ``.double()``, ``.to(device)``, ``state_dict()`` /
    ``load_state_dict()`` and ``torch.save`` all see and move them. A wrapped ``nn.Module``
    (a Pyro ``TransformModule``), or one found inside a ``ComposeTransform``, is registered as a
    submodule. Not tracked: tensors held inside tuples, and tensors the wrapped transform
    creates later (a lazily computed distribution property).

    :param transform: a bijective ``torch.distributions.Transform`` on vectors
        (``event_dim`` 0 or 1).
    :param input_dim: event size.

    Cost: whatever the wrapped transform costs; the log-det reuses both ends of the map.

    Example::

        >>> from torch.distributions.transforms import AffineTransform
        >>> t = WrappedTransform(AffineTransform(0.0, 2.0), input_dim=3)
        >>> t.forward_and_log_det(torch.ones(1, 3))[1]
        tensor([2.0794])
        >>> t = WrappedTransform(AffineTransform(torch.zeros(3), torch.ones(3)), input_dim=3)
        >>> sorted(t.state_dict()), t.double().transform.scale.dtype
        (['transform_loc', 'transform_scale'], torch.float64)
    """

    def __init__(self, transform: Transform, input_dim: int) -> None:
        if not isinstance(transform, Transform):
            raise TypeError(
                f"Flow transforms must be torch.distributions Transforms, got "
                f"{type(transform).__name__}"
            )
        if not transform.bijective:
            raise ValueError(f"{type(transform).__name__} is not bijective")
        event_dim = transform.domain.event_dim
        if event_dim > 1:
            raise ValueError(
                f"{type(transform).__name__} acts on events of {event_dim} dims; Flow needs 0 or 1"
            )
        super().__init__(input_dim)
        self._sum_last = event_dim == 0
        if isinstance(transform, nn.Module):
            self.transform = transform
            self._state_paths: dict[str, list[Path]] = {}
        else:
            self.__dict__["transform"] = transform
            self._state_paths = self._register_state(transform)

    # -- the wrapped transform's state ---------------------------------------------------------
    def _register_state(self, transform: Transform) -> dict[str, list[Path]]:
        """Register the tensors and modules inside ``transform``; return, per buffer or
        parameter name, the places in ``transform`` that hold that tensor."""
        tensors, modules = _find_state(transform)
        taken = set(vars(self)) | set(dir(type(self)))
        for path, module in modules.items():
            name = _state_name(path, taken)
            taken.add(name)
            self.add_module(name, module)
        by_tensor: dict[int, str] = {}
        paths: dict[str, list[Path]] = {}
        for path, tensor in tensors.items():
            name = by_tensor.get(id(tensor))
            if name is None:
                name = _state_name(path, taken)
                taken.add(name)
                by_tensor[id(tensor)] = name
                if isinstance(tensor, nn.Parameter):
                    self.register_parameter(name, tensor)
                else:
                    self.register_buffer(name, tensor)
            paths.setdefault(name, []).append(path)
        return paths

    def _rebind_state(self) -> None:
        """Point the wrapped transform at this module's current tensors (after a conversion or
        an assigning ``load_state_dict`` replaced them)."""
        for name, paths in self._state_paths.items():
            tensor = self._parameters[name] if name in self._parameters else self._buffers[name]
            for path in paths:
                parent = _resolve(self.transform, path[:-1])
                key = path[-1]
                if isinstance(key, int):
                    parent[key] = tensor
                else:
                    setattr(parent, key, tensor)

    def _apply(self, fn: Any, recurse: bool = True) -> WrappedTransform:
        super()._apply(fn, recurse)
        self._rebind_state()
        return self

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._rebind_state()

    # -- the two directions --------------------------------------------------------------------
    def _log_det(self, x: Tensor, y: Tensor) -> Tensor:
        log_det = self.transform.log_abs_det_jacobian(x, y)
        if self._sum_last:
            log_det = log_det.sum(-1)
        return log_det.expand(x.shape[:-1])

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        x, _ = self._prepare(x, context, "x")
        y = self.transform(x)
        return y, self._log_det(x, y)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        y, _ = self._prepare(y, context, "y")
        x = self.transform.inv(y)
        return x, -self._log_det(x, y)

    @property
    def sign(self) -> int | Tensor:
        r"""The sign of :math:`\det \partial y/\partial x`, from the wrapped transform's
        ``sign`` (see :func:`jacobian_sign`); a tensor of the parameters' batch shape when the
        wrapped signs are tensors. ``NotImplementedError`` if the wrapped transform defines no
        sign."""
        return jacobian_sign(self.transform, self.input_dim)

    def extra_repr(self) -> str:
        return f"{self.transform!r}, input_dim={self.input_dim}"
