"""The benchmark scripts' own logic (benchmarks/*.py): what their tables
report, checked on stand-in timings (fast: nothing is timed here)."""

import importlib.util
import pathlib
import sys

import numpy as np
import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # (its dataclasses look their module up)
    spec.loader.exec_module(mod)
    return mod


def test_overhead_floor_share_uses_the_training_step_paired_with_the_floor(monkeypatch):
    """bench_overhead's floor / train divided the floor (timed after its own
    training steps) by the train median of each penalty's row, timed later
    with the prox: the floor's share swung with the rows' train times."""
    pytest.importorskip("torch")
    bo = _load("bench_overhead")

    def paired(train_step, prox_step, repeats):
        # the floor's pairing: train 1.0 ms, floor 0.5 ms; the one-thread floor's: train 2.0 ms,
        # floor 0.2 ms; a prox's: train 4.0 ms, prox 0.1 ms
        return {"floor": (1.0, 0.5), "floor_one_thread": (2.0, 0.2)}.get(prox_step.__name__, (4.0, 0.1))

    monkeypatch.setattr(bo, "_paired_ms", paired)
    monkeypatch.setattr(bo, "MODELS", {"MLP 784-300-10": bo.MODELS["MLP 784-300-10"]})
    monkeypatch.setattr(bo, "PENALTIES", {"weighted l1": bo.PENALTIES["weighted l1"]})
    route = bo.torch_dev.CPU_KERNELS
    rows = bo.bench_cpu(1, batches=(64,))
    assert bo.torch_dev.CPU_KERNELS == route  # (it set "auto" for good: the next tests ran on Numba)
    assert len(rows) == 1 and rows[0]["train_ms"] == 4.0 and rows[0]["floor_ms"] == 0.5
    line = bo.table(rows).splitlines()[-1]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[6] == "2.5%"  # prox / train: 0.1 / 4.0
    assert cells[-2] == "50.0%"  # floor / train: 0.5 / 1.0, not 0.5 / 4.0
    assert cells[-1] == "10.0%"  # one-thread floor / train: 0.2 / 2.0, not 0.2 / 4.0


def test_overhead_schedule_rows_step_the_prox_at_a_new_lr_each_time(monkeypatch):
    """bench_overhead's schedule rows change the lr before every training
    step, so that each prox step paired with one runs at a step it has not
    seen (its thresholds formed again); the rows say so in their model."""
    pytest.importorskip("torch")
    bo = _load("bench_overhead")
    lrs = []

    def paired(train_step, prox_step, repeats):
        for _ in range(3):
            train_step()
            if getattr(prox_step, "__self__", None) is not None:  # (a ProximalStep's step, not a floor)
                lrs.append(prox_step.__self__.optimizer.param_groups[0]["lr"])
                prox_step()
        return 1.0, 0.1

    monkeypatch.setattr(bo, "_paired_ms", paired)
    monkeypatch.setattr(bo, "MODELS", {"MLP 784-300-10": bo.MODELS["MLP 784-300-10"]})
    monkeypatch.setattr(bo, "PENALTIES", {"weighted l1": bo.PENALTIES["weighted l1"]})
    rows = bo.bench_cpu_schedule(1)
    assert [r["model"] for r in rows] == ["MLP 784-300-10, lr schedule"]
    assert len(lrs) == 6 and len(set(lrs)) == 6 and max(lrs) < 1e-3  # (both routes, a new lr at every step)


def test_run_penalty_object_row_is_numba_or_not_run(monkeypatch):
    """run.py's "proxlib[numba, OWL(w).prox]" calls pen.prox without
    use_backend: with PROXLIB_BACKEND=numpy it timed NumPy's reference
    under the Numba label.  It now says it cannot run."""
    np = pytest.importorskip("numpy")
    rb = _load("run")
    if "numba" not in rb.proxlib.available_backends():
        pytest.skip("numba does not import")
    case = rb.make_case("owl", 50, "float64", True)
    monkeypatch.setenv("PROXLIB_BACKEND", "numpy")
    with pytest.raises(rb.Unavailable, match="PROXLIB_BACKEND='numpy'"):
        rb.penalty_object_contender().prepare(case)
    monkeypatch.delenv("PROXLIB_BACKEND")
    out = rb.penalty_object_contender().prepare(case).call()
    with rb.proxlib.use_backend("numpy"):
        ref = rb.proxlib.prox_owl(case.x, case.weights, case.step)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)


def test_overhead_gpu_only_with_host_only_is_refused(tmp_path, capsys):
    """--gpu-only --host-only --out X raised UnboundLocalError (host_section)
    after opening X; both flags ask for one section alone: refused up front."""
    pytest.importorskip("torch")
    bo = _load("bench_overhead")
    out = tmp_path / "o.md"
    with pytest.raises(SystemExit) as exc:
        bo.main(["--gpu-only", "--host-only", "--out", str(out)])
    assert exc.value.code == 2 and "--host-only" in capsys.readouterr().err
    assert not out.exists()


def test_bench_gpu_sections_unknown_name_refused_and_dry_run_says_cupy_skipped(capsys):
    """bench_gpu --sections owl (the help says "torch (OWL)") ran nothing and
    said "found no GPU", with --dry-run too; --dry-run --sections cupy said
    the same with no reason.  An unknown name is now refused, and the dry run
    says why the CuPy section did not run."""
    bg = _load("bench_gpu")
    with pytest.raises(SystemExit) as exc:
        bg.main(["--dry-run", "--sections", "owl"])
    assert exc.value.code == 2 and "cupy, torch, rows" in capsys.readouterr().err
    assert bg.main(["--dry-run", "--sections", "cupy"]) == 2
    assert "CuPy section: no dry run" in capsys.readouterr().err


def test_run_markdown_says_short_calls_are_timed_in_blocks(tmp_path):
    """RESULTS.md's column text said "median wall time over `runs` timed
    calls", while a call under BLOCK_SECONDS is timed in blocks (runs counts
    the blocks: 25 runs of a 5 us call are about a thousand calls)."""
    rb = _load("run")
    case = rb.make_case("owl", 30, "float64", True)
    first = 1e-6
    times = rb.time_repeats(lambda: None, first, budget=0.001, min_runs=3, max_runs=5)
    assert len(times) == 5  # repeats, each (but the first) a block of BLOCK_SECONDS / first calls
    r = rb.Result("owl", case.size, "float64", "proxlib[numpy]", "proxlib", median_s=1e-6, ratio=1.0, runs=5,
                  extra_mem=0.0, extra_bytes=0, max_abs_diff=0.0, tol=1e-10)
    out = tmp_path / "R.md"
    rb.write_markdown(out, [r], rb.machine_description(), [], True, "python benchmarks/run.py", "",
                      ("0", "0"), "n/a", None, 1.0)
    text = out.read_text()
    assert "timed calls" not in text and "in blocks of about that length" in text


@pytest.mark.parametrize("penalty, kernel", [
    ("exclusive (shape)", "_exclusive_cols"),
    ("group+exclusive (shape)", "_exclusive_cols"),
    ("group lasso (channel)", "_group_lasso_cols"),
    ("GrOWL (channel)", "_growl_seq"),
])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_ab_columns_replays_a_training_steps_column_kernels_as_they_ran(penalty, kernel, dtype):
    """ab_columns records the column-kernel calls of a training step (both
    MLP layers, in the MLP's dtype, on the Numba route whatever the
    session's) and replays them out of place: the replay writes what the
    call wrote in the step, bit for bit, the recorded inputs (the hints
    too) are left as they were, and the module's kernels are restored."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("numba")
    abc = _load("ab_columns")
    route = abc.torch_dev.CPU_KERNELS
    kernels = {name: getattr(abc.new, name) for name in abc.KERNELS}
    calls = abc.record_training_calls(penalty, 3, getattr(torch, dtype))
    assert abc.torch_dev.CPU_KERNELS == route
    assert [name for name, _, _ in calls] == [kernel, kernel]
    assert all(str(args[0].dtype) == dtype for _, args, _ in calls)
    assert all(getattr(abc.new, name) is kernels[name] for name in abc.KERNELS)  # (the module's kernels again)
    for name, args, wrote in calls:
        before = [a.copy() if hasattr(a, "copy") else a for a in args]
        got = abc.replay(abc.new, name, args)()
        assert got.view("u1").tobytes() == wrote.view("u1").tobytes()
        assert not (got == args[0]).all()  # (the prox changed the layer)
        for a, b in zip(args, before):
            assert a is b or not hasattr(a, "shape") or (a.view("u1") == b.view("u1")).all()


def test_ab_metric_calls_each_kernel_and_its_sparse_rows_are_sparse(monkeypatch):
    """ab_metric's call runs each metric kernel with its own thresholds (the
    public function's result), and its regimes are what its docstring says:
    "sparse" rows keep at most a quarter of their entries in every kernel,
    "spread" rows span scales from about 1e-30 to 1e30."""
    pytest.importorskip("numba")
    monkeypatch.syspath_prepend(str(BENCH))  # (it imports ab_rows)
    abm = _load("ab_metric")
    rng = np.random.default_rng(0)
    W, D, a, b = abm.rows((40, 300), "float32", "spread", rng)
    scales = np.abs(W).max(axis=1)
    assert float(scales.max()) / float(scales.min()) > 1e30  # (in float64: the float32 ratio overflows)
    W, D, a, b = abm.rows((40, 300), "float64", "sparse", rng)
    expected = {"group_lasso_metric": abm.new.group_lasso_metric(W, D, a),
                "exclusive_lasso_metric": abm.new.exclusive_lasso_metric(W, D, b),
                "group_exclusive_metric": abm.new.group_exclusive_metric(W, D, a, b)}
    for op in abm.OPS:
        out = np.empty_like(W)
        assert abm.call(abm.new, op, W, D, a, b, out) is out
        np.testing.assert_array_equal(out, expected[op])
        if op != "group_lasso_metric":
            assert 0.0 < np.mean(out != 0) <= 0.25


def test_owl_stages_times_the_kernels_stages_and_restores_them():
    """owl_stages wraps the compiled stages owl() calls through the module
    in timers: on an input past the small-input kernel, the sort, the pool-
    adjacent-violators, the values and the scatter are timed (each within
    the whole call), the result is owl's, and the module's stages are the
    compiled ones again afterwards."""
    pytest.importorskip("numba")
    stages = _load("owl_stages")
    NB = stages.NB
    rng = np.random.default_rng(0)
    v = rng.standard_normal(5000)
    w = np.sort(rng.random(5000))[::-1] * 1e-3
    want = NB.owl(v, w, parallel=False)
    times, whole = stages.stage_times(v, w, False, 2)
    for name in ("_owl_sorted_keys", "_owl_pava_split", "_owl_values", "_owl_scatter"):
        assert 0 < times[name] < whole
    assert set(times) <= set(stages.STAGES)
    assert all(getattr(NB, name).__name__ == name for name in stages.STAGES)  # (not the timers, named call)
    np.testing.assert_array_equal(NB.owl(v, w, parallel=False), want)


def test_call_overhead_times_a_tensors_call_against_the_kernel_it_runs(monkeypatch):
    """call_overhead's "kernel alone" for a CPU tensor is the kernel its
    public call runs: Numba's serial kernel on the tensor's NumPy view
    (proxlib._registry.numba_view), the public result's bits; the torch
    backend's kernel where the view does not apply (CPU_KERNELS = "torch",
    as the suite runs)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("numba")
    from proxlib.backends import torch_dev

    co = _load("call_overhead")
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((64, 10)))
    for route in ("auto", "torch"):
        monkeypatch.setattr(torch_dev, "CPU_KERNELS", route)
        for name in ("group_lasso", "weighted_l1"):
            pen = co.MAKERS[name](None)
            got = co.kernel_alone(pen, x, 0.5)()
            want = co._public_call(name, co.R.OPERATORS[name].function, pen, x, 0.5)()
            assert type(got) is (np.ndarray if route == "auto" else torch.Tensor), (route, name)
            np.testing.assert_array_equal(np.asarray(got).reshape(x.shape), want.numpy())


def test_first_step_times_a_cold_cache_and_writes_its_table(tmp_path):
    """first_step.py runs each penalty's first proximal step in a fresh
    process with an empty Numba cache: the compilations it counts are those
    of that step (some, as nothing is cached), the second step reuses them
    (far faster), and the table names the penalty and the tree."""
    pytest.importorskip("torch")
    pytest.importorskip("numba")
    fs = _load("first_step")
    out = tmp_path / "FIRST_STEP.md"
    fs.main(["--penalties", "weighted l1", "--out", str(out)])
    text = out.read_text()
    row = [line for line in text.splitlines() if line.startswith("| weighted l1 | this tree |")]
    assert len(row) == 1, text
    first, compilations, second = (cell.strip() for cell in row[0].split("|")[3:6])
    assert int(compilations) > 0
    assert float(first) > float(second) / 1e3
    with pytest.raises(SystemExit):
        fs.main(["--penalties", "no such penalty"])
