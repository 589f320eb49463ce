"""Windowed self-attention: global up to ATTENTION_WINDOW a side, window by window above it."""
from __future__ import annotations

import pytest
import torch
from test_models import naive_self_attention

from fagan_engine.models.archs import SelfAttention
from fagan_engine.models.archs.attention import ATTENTION_WINDOW, window_grid


@pytest.mark.parametrize("height, width", [(64, 64), (65, 64), (130, 129), (256, 97), (4, 300)])
def test_window_grid_covers_the_map_with_the_fewest_windows_of_at_most_the_window_side(height: int, width: int) -> None:
    rows, cols, tile_h, tile_w = window_grid(height, width)
    assert rows == -(-height // ATTENTION_WINDOW) and cols == -(-width // ATTENTION_WINDOW)
    assert tile_h <= ATTENTION_WINDOW and tile_w <= ATTENTION_WINDOW
    assert 0 <= rows * tile_h - height < rows and 0 <= cols * tile_w - width < cols


@pytest.mark.parametrize("pool", [False, True])
def test_each_window_attends_within_itself_and_equals_global_attention_there(pool: bool) -> None:
    torch.manual_seed(0)
    module = SelfAttention(16, pool=pool)
    x = torch.randn(1, 16, 2 * ATTENTION_WINDOW, ATTENTION_WINDOW + 2)  # 2 x 2 windows of 64 x 33
    with torch.no_grad():
        module.gamma.fill_(0.7)
        out = module(x)
        top_left = naive_self_attention(module, x[:, :, :ATTENTION_WINDOW, :33])
        bottom_right = naive_self_attention(module, x[:, :, ATTENTION_WINDOW:, 33:])
    assert torch.allclose(out[:, :, :ATTENTION_WINDOW, :33], top_left, atol=1e-5, rtol=1e-4)
    assert torch.allclose(out[:, :, ATTENTION_WINDOW:, 33:], bottom_right, atol=1e-5, rtol=1e-4)


def test_a_map_within_the_window_is_attended_globally() -> None:
    torch.manual_seed(1)
    module = SelfAttention(16, pool=True)
    x = torch.randn(2, 16, ATTENTION_WINDOW, ATTENTION_WINDOW - 7)
    with torch.no_grad():
        module.gamma.fill_(0.5)
        assert torch.allclose(module(x), naive_self_attention(module, x), atol=1e-5, rtol=1e-4)


def test_padding_rows_of_a_ragged_grid_never_reach_the_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """130 rows → 3 windows of 44 (2 replicated rows): changing the last input row changes only the last window."""
    torch.manual_seed(2)
    module = SelfAttention(8)
    with torch.no_grad():
        module.gamma.fill_(1.0)
        x = torch.randn(1, 8, 130, 20)
        changed = x.clone()
        changed[:, :, -1] += 5.0
        difference = (module(changed) - module(x)).abs().amax(dim=(0, 1, 3))
    assert float(difference[:88].max()) == 0.0 and float(difference[88:].max()) > 0.0


def test_windows_make_attention_cost_linear_in_the_slice() -> None:
    """Pairs of (query, key) positions scored: global grows with N², windowed with N."""
    def pairs(side: int) -> int:
        rows, cols, tile_h, tile_w = window_grid(side, side)
        return rows * cols * (tile_h * tile_w) ** 2
    assert pairs(512) / pairs(256) == pytest.approx(4.0)
    assert (512**2) ** 2 / pairs(512) > 50
