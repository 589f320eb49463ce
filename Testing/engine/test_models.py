"""Architecture tests: shapes of every preset, attention correctness, fusion equations, SN."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fagan_engine.models.archs import (
    GFFB,
    LFFB,
    Discriminator,
    SelfAttention,
    build_discriminator,
    build_generator,
    direct_fusion,
    preset_config,
    weighted_fusion,
)
from fagan_engine.models.archs.blocks import ResidualBlock
from fagan_engine.util.config import PRESETS
from fagan_engine.util.errors import ConfigError


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("scale", [2, 4, 8])
def test_every_preset_upsamples_by_its_scale(preset: str, scale: int) -> None:
    model = build_generator(preset_config(preset, scale, n_feats=16, n_blocks=1))
    with torch.no_grad():
        out = model(torch.rand(2, 1, 12, 10))
    assert out.shape == (2, 1, 12 * scale, 10 * scale)
    assert torch.isfinite(out).all()


def test_presets_are_switches_of_one_architecture() -> None:
    def blocks(preset: str) -> "set[type]":
        return {type(m) for m in build_generator(preset_config(preset, 2)).modules()}

    assert LFFB in blocks("fagan") and ResidualBlock not in blocks("fagan")
    assert ResidualBlock in blocks("srgan") and GFFB not in blocks("srgan")
    gffb = build_generator(preset_config("ca-srgan", 2)).gffb_lr
    assert gffb.ca is not None and gffb.sa is None
    gffb = build_generator(preset_config("sa-srgan", 2)).gffb_lr
    assert gffb.ca is None and gffb.sa is not None
    assert build_generator(preset_config("fagan-direct-fusion", 2)).gffb_lr.fusion == "direct"
    assert LFFB not in blocks("fagan-no-lffb")
    with pytest.raises(ConfigError):
        preset_config("esrgan", 2)


def test_lffb_has_three_paths_of_three_convs_and_one_relu() -> None:
    block = LFFB(8)
    for path, kernel in zip(block.paths, (3, 5, 7)):
        convs = [m for m in path if isinstance(m, torch.nn.Conv2d)]
        assert [c.kernel_size for c in convs] == [(kernel, kernel)] * 3
        assert sum(isinstance(m, torch.nn.ReLU) for m in path) == 1
    x = torch.rand(1, 8, 9, 9)
    with torch.no_grad():
        for conv in block.fuse:
            conv.weight.zero_()
            conv.bias.zero_()
        assert torch.equal(block(x), x)  # residual connection (eq. 7)


def test_attention_placement_lr_and_hr() -> None:
    lr = build_generator(preset_config("fagan", 4, attention_placement="lr"))
    hr = build_generator(preset_config("fagan", 4, attention_placement="hr"))
    assert lr.gffb_lr is not None and lr.gffb_hr is None
    assert hr.gffb_hr is not None and hr.gffb_lr is None


def test_gamma_starts_at_zero_so_self_attention_is_identity() -> None:
    attention = SelfAttention(16)
    assert attention.gamma.item() == 0.0
    x = torch.randn(2, 16, 6, 7)
    assert torch.equal(attention(x), x)


def naive_self_attention(module: SelfAttention, x: torch.Tensor) -> torch.Tensor:
    """SAGAN written out with the explicit N×N softmax matrix (eq. 8-11), for small inputs only."""
    b, c, h, w = x.shape
    f, g, v_in = module.f(x), module.g(x), module.h(x)
    if module.pool:
        f, v_in = F.max_pool2d(f, 2), F.max_pool2d(v_in, 2)
    s = torch.einsum("bci,bcj->bij", f.flatten(2), g.flatten(2))  # s_ij = f(x_i)^T g(x_j)
    beta = torch.softmax(s, dim=1)  # beta_{j,i}: softmax over key positions i
    o = torch.einsum("bij,bci->bcj", beta, v_in.flatten(2)).reshape(b, c, h, w)
    return module.gamma * module.v(o) + x


@pytest.mark.parametrize("pool", [False, True])
def test_sdpa_attention_equals_naive_softmax_reference(pool: bool) -> None:
    torch.manual_seed(0)
    module = SelfAttention(16, pool=pool)
    with torch.no_grad():
        module.gamma.fill_(0.7)
        x = torch.randn(2, 16, 10, 12)
        assert torch.allclose(module(x), naive_self_attention(module, x), atol=1e-5, rtol=1e-4)


def test_attention_gradients_flow_through_memory_efficient_kernel() -> None:
    module = SelfAttention(16, pool=True)
    x = torch.randn(1, 16, 8, 8, requires_grad=True)
    module(x).sum().backward()
    assert module.gamma.grad is not None and x.grad is not None


def test_direct_fusion_is_equation_12() -> None:
    r, y = torch.randn(50), torch.randn(50)
    assert torch.allclose(direct_fusion(r, y, 0.5, 0.5), 0.5 * r + 0.5 * y)


def test_weighted_fusion_is_equation_13_away_from_zero() -> None:
    r = torch.rand(100) + 0.5
    y = torch.rand(100) + 0.5
    literal = ((0.5 * r).abs() ** 2 + (0.5 * y).abs() ** 2) / (0.5 * r + 0.5 * y)
    assert torch.allclose(weighted_fusion(r, y, 0.5, 0.5, 1e-3), literal, rtol=1e-5)


def test_weighted_fusion_is_finite_with_finite_gradient_where_the_denominator_vanishes() -> None:
    r = torch.tensor([1.0, -2.0, 0.0, 3.0], requires_grad=True)
    y = torch.tensor([-1.0, 2.0, 0.0, -3.0 + 1e-7], requires_grad=True)
    out = weighted_fusion(r, y, 0.5, 0.5, 1e-3)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(r.grad).all() and torch.isfinite(y.grad).all()
    assert out.abs().max() <= (0.25 * 9 * 2) / (2 * 1e-3) + 1e-3  # bounded by N / (2 eps)


def test_gffb_uses_the_configured_fusion() -> None:
    torch.manual_seed(0)
    x = torch.rand(1, 16, 6, 6) + 0.1
    block = GFFB(16, use_ca=True, use_sa=True, fusion="weighted")
    r, y = block.ca(x), block.sa(x)
    assert torch.allclose(block(x), weighted_fusion(r, y, 0.5, 0.5, 1e-3))
    block.fusion = "direct"
    assert torch.allclose(block(x), 0.5 * r + 0.5 * y)


def test_spectral_norm_wraps_every_conv_and_linear_and_bounds_sigma() -> None:
    torch.manual_seed(0)
    disc = Discriminator(8, spectral=True)
    layers = [m for m in disc.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert layers and all(hasattr(m, "parametrizations") and "weight" in m.parametrizations for m in layers)
    disc.train()
    for _ in range(30):  # power iterations converge
        disc(torch.rand(2, 1, 32, 32))
    for layer in layers:
        weight = layer.weight.detach().flatten(1)
        assert torch.linalg.matrix_norm(weight, ord=2).item() == pytest.approx(1.0, abs=0.05)
    plain = Discriminator(8, spectral=False)
    assert not any(hasattr(m, "parametrizations") for m in plain.modules())


@pytest.mark.parametrize("size", [16, 40, 96])
def test_discriminator_accepts_any_patch_size(size: int) -> None:
    disc = build_discriminator(preset_config("fagan", 4, d_feats=8))
    assert disc(torch.rand(3, 1, size, size)).shape == (3, 1)


def test_generator_starts_at_the_bicubic_baseline() -> None:
    model = build_generator(preset_config("fagan", 4, n_feats=16, n_blocks=1))
    x = torch.rand(2, 1, 9, 11)
    with torch.no_grad():
        assert torch.allclose(model(x), F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False))
