"""Harness cases: image transforms on (C, H, W) events (squeeze, ActNorm, 1x1 convolution,
couplings, multi-scale stacks, MintNet, integer discrete flows)."""

from __future__ import annotations

import torch
from torch import Tensor

from pyro_flows.flows.image import glow, idf, mintnet, realnvp_image
from pyro_flows.transforms.base import FlowTransform
from pyro_flows.transforms.image import (
    ChannelActNorm,
    ChannelPermute,
    ImageAffineCoupling,
    ImageSequential,
    IntegerAdditiveCoupling,
    InvertibleConv1x1,
    MintNetLayer,
    MultiScale,
    Squeeze,
    Unsqueeze,
)

from . import Case


def _data_init(transform: FlowTransform, data: Tensor) -> None:
    """Run one training-mode inverse pass (ActNorm's data-dependent initialisation), then a fixed
    perturbation so the layers are neither the identity nor the data's maximum-likelihood fit."""
    transform.train()
    g = torch.Generator().manual_seed(5)
    context = None
    if transform.context_dim is not None:
        context = torch.randn(data.shape[0], transform.context_dim, generator=g).to(data)
    with torch.no_grad():
        transform.inverse_and_log_det(data, context)
    with torch.no_grad():
        for p in transform.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p))


def _whole(flow) -> FlowTransform:
    layers = list(flow.transforms)
    return layers[0] if len(layers) == 1 else ImageSequential(layers)


def _glow(context_dim: int | None = None) -> FlowTransform:
    return _whole(glow((1, 4, 4), num_transforms=1, hidden_channels=4, context_dim=context_dim))


def _multiscale_plain() -> FlowTransform:
    return MultiScale(
        (2, 2, 4),
        steps=ImageSequential([InvertibleConv1x1((8, 1, 2)), ChannelActNorm((8, 1, 2))]),
        inner=InvertibleConv1x1((4, 1, 2)),
    )


S1 = (1, 4, 4)
S2 = (2, 4, 4)
S3 = (3, 2, 2)
MINT_TOL = {"tol": 1e-13, "max_iter": 2000}
#: deep stacks with perturbed weights reach |values| ~ 1e6 on inputs of size 20, so float64
#: rounding alone gives round-trip errors ~ 1e-7 there
DEEP_ATOL = 1e-6

CASES: list[Case] = [
    Case("image-squeeze-1x4x4", lambda: Squeeze(S1), 16, event_shape=S1, output_shape=(4, 2, 2)),
    Case(
        "image-unsqueeze-8x1x2",
        lambda: Unsqueeze((8, 1, 2)),
        16,
        event_shape=(8, 1, 2),
        output_shape=(2, 2, 4),
    ),
    Case("image-actnorm-3x2x2", lambda: ChannelActNorm(S3), 12, event_shape=S3,
         prepare=_data_init),
    Case("image-conv1x1-lu-3x2x2", lambda: InvertibleConv1x1(S3), 12, event_shape=S3),
    Case("image-conv1x1-lu-1x2x2", lambda: InvertibleConv1x1((1, 2, 2)), 4,
         event_shape=(1, 2, 2)),
    Case("image-conv1x1-qr-2x4x4", lambda: InvertibleConv1x1(S2, "qr"), 32, event_shape=S2),
    Case("image-permute-3x2x2", lambda: ChannelPermute(S3, [1, 2, 0]), 12, event_shape=S3),
    Case(
        "image-coupling-checkerboard-2x4x4",
        lambda: ImageAffineCoupling(S2, "checkerboard", 0, hidden_channels=6),
        32,
        event_shape=S2,
    ),
    Case(
        "image-coupling-checkerboard-parity1-1x4x4",
        lambda: ImageAffineCoupling(S1, "checkerboard", 1, hidden_channels=6, num_blocks=0),
        16,
        event_shape=S1,
    ),
    Case(
        "image-coupling-channel-3x2x2",
        lambda: ImageAffineCoupling(S3, "channel", 0, hidden_channels=6),
        12,
        event_shape=S3,
    ),
    Case(
        "image-coupling-channel-parity1-3x2x2",
        lambda: ImageAffineCoupling(S3, "channel", 1, hidden_channels=6),
        12,
        event_shape=S3,
    ),
    Case(
        "image-coupling-channel-context-2x4x4",
        lambda: ImageAffineCoupling(S2, "channel", 0, hidden_channels=6, context_dim=3),
        32,
        context_dim=3,
        event_shape=S2,
    ),
    Case("image-multiscale-2x2x4", _multiscale_plain, 16, event_shape=(2, 2, 4),
         prepare=_data_init),
    Case("image-glow-1x4x4", _glow, 16, event_shape=S1, prepare=_data_init,
         inverse_atol=DEEP_ATOL),
    Case(
        "image-glow-context-1x4x4",
        lambda: _glow(context_dim=2),
        16,
        context_dim=2,
        event_shape=S1,
        prepare=_data_init,
        inverse_atol=DEEP_ATOL,
    ),
    Case(
        "image-realnvp-1x4x4",
        lambda: _whole(realnvp_image(S1, num_transforms=1, hidden_channels=4)),
        16,
        event_shape=S1,
        prepare=_data_init,
        inverse_atol=DEEP_ATOL,
    ),
    Case(
        "image-mintnet-layer-2x4x4",
        lambda: MintNetLayer(S2, hidden_per_channel=3, **MINT_TOL),
        32,
        event_shape=S2,
        lower_triangular=True,
        inverse_atol=1e-8,
    ),
    Case(
        "image-mintnet-layer-reverse-1x4x4",
        lambda: MintNetLayer(S1, hidden_per_channel=2, kernel_size=5, reverse=True, **MINT_TOL),
        16,
        event_shape=S1,
        inverse_atol=1e-8,
    ),
    Case(
        "image-mintnet-1x4x4",
        lambda: _whole(mintnet(S1, num_transforms=2, hidden_per_channel=2, **MINT_TOL)),
        16,
        event_shape=S1,
        prepare=_data_init,
        inverse_atol=1e-8,
    ),
    Case(
        "image-idf-coupling-channel-3x2x2",
        lambda: IntegerAdditiveCoupling(S3, "channel", 0, hidden_channels=6, output_scale=4.0),
        12,
        event_shape=S3,
        discrete=True,
    ),
    Case(
        "image-idf-coupling-checkerboard-1x4x4",
        lambda: IntegerAdditiveCoupling(S1, "checkerboard", 1, hidden_channels=6),
        16,
        event_shape=S1,
        discrete=True,
    ),
    Case(
        "image-idf-1x4x4",
        lambda: _whole(idf(S1, num_transforms=2, hidden_channels=4, num_levels=17)),
        16,
        event_shape=S1,
        discrete=True,
    ),
]
