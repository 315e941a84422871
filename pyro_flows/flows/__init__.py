"""Flow builders: each a plain function returning a :class:`~pyro_flows.Flow`, and the one
registry of them (:data:`BUILDERS`).

Every vector builder has the signature ``builder(input_dim, num_transforms=...,
hidden_dims=..., context_dim=None, **options)`` and stacks its layer with a permutation in
between (``Reverse`` by default, so consecutive layers see the dimensions in opposite orders).
Common options: ``permutation`` (``"reverse"``, ``"random"`` (drawn from torch's RNG) or
``None``), ``base`` (a base distribution or module, default standard Normal) and, for layers with
a conditioner, ``activation``. Image builders take an event shape ``(C, H, W)``.

Modules: :mod:`.vector` (NICE, RealNVP, MAF, IAF, NSF, planar, radial), :mod:`.image` (Glow,
RealNVP, MintNet, IDF on images), :mod:`.iterative_gaussianization`, :mod:`.continuous`
(FFJORD), :mod:`.sylvester_flow`, :mod:`.block_autoregressive`,
:mod:`.polynomial` (SOSPF, BPF), :mod:`.monotonic` (UNAF), :mod:`.residual` (i-ResNet,
Residual Flows), and :mod:`.registry`.
"""

from .block_autoregressive import bnaf
from .continuous import cnf
from .image import glow, idf, mintnet, realnvp_image
from .iterative_gaussianization import gaussianization
from .monotonic import unaf
from .polynomial import bpf, sospf
from .registry import BUILDERS, BuilderSpec, builder_names, get_builder, register_builder
from .residual import iresnet, residual_flow
from .sylvester_flow import sylvester
from .vector import iaf, maf, nice, nsf, planar, radial, realnvp

#: every registered builder's name (the builders themselves are attributes of this module)
__all__ = [
    "nice",
    "realnvp",
    "maf",
    "iaf",
    "nsf",
    "planar",
    "radial",
    "sylvester",
    "bnaf",
    "sospf",
    "bpf",
    "unaf",
    "iresnet",
    "residual_flow",
    "glow",
    "realnvp_image",
    "mintnet",
    "idf",
    "cnf",
    "gaussianization",
]

__all__ += ["BUILDERS", "BuilderSpec", "builder_names", "get_builder", "register_builder"]
