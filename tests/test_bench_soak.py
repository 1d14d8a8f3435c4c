"""The pass/fail criteria of ``benchmarks/soak.py`` (the soak itself is a benchmark)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
MIB = 2**20


@pytest.fixture(scope="module")
def soak() -> ModuleType:
    """``benchmarks/soak.py`` as a module (it imports its sibling ``results_io``)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("bench_soak", BENCHMARKS / "soak.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_rss_slope_is_mib_per_minute(soak: ModuleType) -> None:
    t = np.arange(0, 600, 10.0)  # 10 minutes
    rss = 100 * MIB + 2 * MIB * t / 60  # +2 MiB per minute
    assert soak.rss_slope_mib_per_min(t, rss) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="2 samples"):
        soak.rss_slope_mib_per_min([5.0], [MIB])


def test_memory_verdict_flat_growing_and_warmup(soak: ModuleType) -> None:
    t = np.arange(0, 1800, 10.0)
    noise = np.random.default_rng(0).normal(0, 0.3 * MIB, t.size)
    warm = np.where(t < 60, 50 * MIB, 0)  # a big step during warm-up only
    flat = soak.memory_verdict(t, 150 * MIB - warm + noise, warmup_s=180)
    assert flat["slope_ok"] and flat["range_ok"]
    assert abs(flat["slope_mib_per_min"]) < 0.1
    growing = soak.memory_verdict(t, 150 * MIB + 1.5 * MIB * t / 60 + noise, warmup_s=180)
    assert not growing["slope_ok"] and not growing["range_ok"]
    assert growing["slope_mib_per_min"] == pytest.approx(1.5, rel=0.05)
    early_leak = soak.memory_verdict(t, 150 * MIB + np.minimum(t, 900) * MIB, warmup_s=180)
    assert early_leak["slope_ok"] and not early_leak["range_ok"]  # the range catches it
    too_few = soak.memory_verdict([0.0], [MIB], warmup_s=0)
    assert not too_few["slope_ok"] and not too_few["range_ok"]


def test_runs_are_lossless(soak: ModuleType) -> None:
    assert soak.runs([7, 0, 1, 2, 5, 8]) == [[0, 2], [5, 5], [7, 8]]
    assert soak.runs([]) == []


def test_check_accounting(soak: ModuleType) -> None:
    good = soak.check_accounting(6, 3, 3, [1, 2, 4], [0, 3, 5])
    assert all(good.values())
    lost = soak.check_accounting(6, 3, 2, [1, 2], [0, 3, 5])  # frame 4 unaccounted
    assert not lost["balance"] and not lost["complete"]
    twice = soak.check_accounting(4, 2, 2, [1, 3], [0, 3])  # 3 written and dropped
    assert not twice["disjoint"] and not twice["complete"]
    order = soak.check_accounting(3, 2, 1, [1], [2, 0])
    assert not order["written_in_order"] and order["complete"]
