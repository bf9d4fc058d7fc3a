"""The benchmark scripts' own logic (benchmarks/*.py): what their tables
report, checked on stand-in timings (fast: nothing is timed here)."""

import importlib.util
import pathlib

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_overhead_floor_share_uses_the_training_step_paired_with_the_floor(monkeypatch):
    """bench_overhead's floor / train divided the floor (timed after its own
    training steps) by the train median of each penalty's row, timed later
    with the prox: the floor's share swung with the rows' train times."""
    pytest.importorskip("torch")
    bo = _load("bench_overhead")

    def paired(train_step, prox_step, repeats):
        # the floor's pairing: train 1.0 ms, floor 0.5 ms; a prox's: train 4.0 ms, prox 0.1 ms
        return (1.0, 0.5) if prox_step.__name__ == "floor" else (4.0, 0.1)

    monkeypatch.setattr(bo, "_paired_ms", paired)
    monkeypatch.setattr(bo, "MODELS", {"MLP 784-300-10": bo.MODELS["MLP 784-300-10"]})
    monkeypatch.setattr(bo, "PENALTIES", {"weighted l1": bo.PENALTIES["weighted l1"]})
    rows = bo.bench_cpu(1, batches=(64,))
    assert len(rows) == 1 and rows[0]["train_ms"] == 4.0 and rows[0]["floor_ms"] == 0.5
    line = bo.table(rows).splitlines()[-1]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[6] == "2.5%"  # prox / train: 0.1 / 4.0
    assert cells[-1] == "50.0%"  # floor / train: 0.5 / 1.0, not 0.5 / 4.0
