"""Self-attention never allocates the N×N matrix: memory measured at 128² positions.

torch: the profiler's memory timeline (every allocation, kernel temporaries included).
ONNX Runtime: the RSS a fresh process adds during one call, with its flash kernel and with the
fallback kernel that ORT uses when flash is unavailable (the query-chunk loop bounds it).
"""
from __future__ import annotations

import pytest

from benchmarks.attention_bench import export_module, torch_peak_bytes
from benchmarks.worker import run_task

SIDE = 128
N = SIDE * SIDE
MIB = 2**20


@pytest.mark.parametrize("pool", [True, False])
def test_torch_sdpa_path_stays_far_below_the_attention_matrix(pool: bool) -> None:
    keys = N // 4 if pool else N
    matrix = 4 * N * keys  # 256 MiB pooled, 1 GiB unpooled
    peak = torch_peak_bytes(SIDE, pool)
    assert peak < matrix / 16, f"peak {peak / MIB:.0f} MiB vs N×M {matrix / MIB:.0f} MiB"


def test_the_memory_measurement_sees_a_materialised_matrix() -> None:
    side = 64
    matrix = 4 * (side * side) ** 2
    assert torch_peak_bytes(side, pool=False, naive=True) >= matrix
    assert torch_peak_bytes(side, pool=False) < matrix / 8


@pytest.fixture(scope="module")
def exported_attention(tmp_path_factory: pytest.TempPathFactory) -> str:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    return export_module(pool=False, path=str(tmp_path_factory.mktemp("attention") / "attention.onnx"))


@pytest.mark.parametrize("flash", [True, False])
def test_onnx_runtime_path_stays_far_below_the_attention_matrix(flash: bool, exported_attention: str) -> None:
    from fagan_engine.models.onnx_attention import CHUNK_ELEMENTS

    matrix = 4 * N * N  # unpooled: 1 GiB
    model = exported_attention
    env = {} if flash else {"ORT_DISABLE_FLASH_ATTENTION": "1"}
    result = run_task("attention", {"side": SIDE, "pool": False, "impl": "onnx", "onnx": model, "repeats": 1}, env)
    assert "error" not in result, result
    added = result["added_rss_mib"] * MIB
    bound = matrix / 16 if flash else 2 * 4 * CHUNK_ELEMENTS  # fallback: one chunk of scores + its softmax
    assert added < bound, f"added {added / MIB:.0f} MiB vs bound {bound / MIB:.0f} MiB (N×N {matrix / MIB:.0f} MiB)"
