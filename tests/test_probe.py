"""The batch-size probe: its decisions on known throughputs, and the real command on a
real Lightning model."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from sweep.practice.batch_size import Measurement, Probe, conclusions
from tests.conftest import run_sweep

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def probe_of(*throughputs: float, stop: str = "throughput stopped growing") -> Probe:
    rows = [Measurement(8 << i, t, 1000 * (8 << i) / t) for i, t in enumerate(throughputs)]
    return Probe(rows, stop, None)


def test_recommends_the_last_size_that_still_gained() -> None:
    # doubling doubles up to 64, then +30%, then +5%: 128 is the last that paid off
    result = probe_of(1000, 2000, 3900, 7600, 9900, 10300)
    assert result.recommended == 128
    a, b = result.bottleneck
    assert (a.batch_size, b.batch_size) == (64, 128)
    text = "\n".join(conclusions(result))
    assert "data.batch_size=128" in text and "doubling 64 → 128" in text


def test_linear_scaling_has_no_bottleneck() -> None:
    result = probe_of(1000, 1990, 3950, stop="out of memory at batch 64")
    assert result.recommended == 32 and result.bottleneck is None
    assert "Bottleneck" not in "\n".join(conclusions(result))


@pytest.mark.slow
def test_probe_command_on_digits_mlp(tmp_path) -> None:
    """A training set of 359 digits: sizes from 8 by doubling until throughput stops
    growing or the batch exceeds the training set."""
    proc = run_sweep(tmp_path, "probe=batch_size", "data.val_fraction=0.8")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    rows = [
        (int(m.group(1)), float(m.group(2).replace(",", "")))
        for m in re.finditer(r"^\s+(\d+)\s+([\d,]+)\s+[\d.]+", out, re.MULTILINE)
    ]
    sizes = [size for size, _ in rows]
    assert sizes == [8 << i for i in range(len(sizes))] and len(sizes) >= 2
    assert all(throughput > 0 for _, throughput in rows)
    stop = re.search(r"Stopped: (.*)\.", out).group(1)
    if stop.startswith("batch"):
        assert stop == f"batch {sizes[-1] * 2} exceeds the training set (359 examples)"
    else:
        assert stop.startswith(f"throughput stopped growing (under +10% at {sizes[-1]})")
        assert rows[-1][1] < 1.1 * max(t for _, t in rows[:-1])
    recommended = int(re.search(r"Recommended: data.batch_size=(\d+)", out).group(1))
    assert recommended in sizes
    table = pd.read_csv(re.search(r"Table: (\S+)", out).group(1))
    assert table["batch_size"].tolist() == sizes
    plot = re.search(r"Plot:  (\S+)", out).group(1)
    assert Path(plot).read_bytes()[:8] == PNG_SIGNATURE
    assert "GPU available" not in out + proc.stderr, "Lightning's banners stay quiet"
