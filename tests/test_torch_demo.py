"""``python -m proxlib.demo --quick`` and the seed experiments' quick runs end to end,
and torch stays optional."""

from __future__ import annotations

import json
import os
import sys

import _procs
import numpy as np
import pytest

torch = pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG = b"\x89PNG\r\n\x1a\n"


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["PROXLIB_BACKEND"] = "numpy"  # no JIT warm-up in a subprocess; backends are tested elsewhere
    return env


def _needs_demo_extra():
    for mod in ("sklearn", "matplotlib", "torch_pruning"):
        pytest.importorskip(mod)


def test_import_proxlib_does_not_import_torch():
    code = "import sys, proxlib; import proxlib.groupings, proxlib.penalties; print(sorted(m for m in ('torch', 'cupy') if m in sys.modules))"
    out = _procs.python(code, timeout=300, env=_env(), cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def _strict_json(path):
    """The file's JSON, read as a strict reader (RFC 8259: no NaN, Infinity) would."""

    def refuse(token):
        raise ValueError(f"{path.name} is not standard JSON: {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_write_json_writes_standard_json(tmp_path):
    # the demo's results.json held NaN (the similarity of tied rows when a
    # network tied none), which strict JSON readers refuse
    import torch

    from proxlib import _cli

    _cli.write_json(tmp_path / "r.json", {"a": float("nan"), "b": [np.float32(1.5), np.inf, -np.inf], "c": np.arange(2),
                                          "d": torch.tensor([0.5, float("nan")]), "e": (1, "x", None, True)})
    assert _strict_json(tmp_path / "r.json") == {"a": None, "b": [1.5, None, None], "c": [0, 1], "d": [0.5, None],
                                                 "e": [1, "x", None, True]}


def test_write_json_replaces_non_finite_floats_inside_tuples(tmp_path):
    # a tuple is written as a JSON array: its NaN must become null too
    from proxlib import _cli

    _cli.write_json(tmp_path / "r.json", {"t": (float("nan"), 1.0, (np.float64(np.inf),))})
    assert _strict_json(tmp_path / "r.json") == {"t": [None, 1.0, [None]]}


def test_option_types_accept_the_upper_bounds_they_name():
    # in_range(lo, hi) and seed say [lo, hi]: hi itself is a valid value
    from proxlib import _cli

    assert _cli.seed(str(2**32 - 1)) == 2**32 - 1 and _cli.in_range(0.0, 1.0)("1") == 1.0
    assert _cli.in_range(0.0, 0.5)("0") == 0.0


def test_nonnegative_int_accepts_zero():
    # "an integer >= 0": --epochs 0, --iterations 0 are valid
    import argparse

    from proxlib import _cli

    assert _cli.nonnegative_int("0") == 0
    with pytest.raises(argparse.ArgumentTypeError, match="an integer >= 0, got -1"):
        _cli.nonnegative_int("-1")


def test_nonnegative_float_accepts_zero():
    # "a finite number >= 0": --momentum 0, --weight-decay 0 are valid
    import argparse

    from proxlib import _cli

    assert _cli.nonnegative_float("0") == 0.0 and _cli.nonnegative_float("-0.0") == 0.0
    with pytest.raises(argparse.ArgumentTypeError, match="a finite number >= 0"):
        _cli.nonnegative_float("-1e-300")


def test_demo_quick_runs_end_to_end(tmp_path):
    _needs_demo_extra()
    cmd = [sys.executable, "-m", "proxlib.demo", "--quick", "--out", str(tmp_path)]
    out = _procs.run(cmd, env=_env(), cwd=ROOT, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    for name in ("baseline", "weight decay", "group-Lasso", "GrOWL"):
        assert f"| {name} |" in out.stdout
    assert "parameter sharing" in out.stdout and "poster: sparsity" in out.stdout
    assert "The poster's pattern" in out.stdout
    assert "compacted (proxlib.torch.compact)" in out.stdout and "| total |" in out.stdout
    assert (tmp_path / "tying.png").read_bytes()[:8] == PNG
    res = _strict_json(tmp_path / "results.json")
    r = res["results"]
    assert set(r) == {"baseline", "weight decay", "group-Lasso", "group-Lasso+l2", "GrOWL", "GrOWL+l2"}
    for v in r.values():
        assert 0.0 <= v["sparsity"] <= 1.0 and 0.0 <= v["accuracy"] <= 1.0 and v["compression"] >= 1.0
        assert len(v["labels"]) == 784
    # the quick run already shows the regularisers at work: zero rows and tied rows
    for name in ("group-Lasso", "GrOWL"):
        assert r[name]["sparsity"] > 0.3 and r[name]["tied_rows"] > 0
    assert r["baseline"]["sparsity"] == 0.0 and r["baseline"]["tied_rows"] == 0
    labels = np.array(r["GrOWL"]["labels"])
    assert r["GrOWL"]["zero_rows"] == int((labels < 0).sum())
    assert set(res["pattern"]) >= {"GrOWL sparsity >= 80%", "GrOWL accuracy within 2 points of the baseline"}
    comp = res["compaction"]
    assert comp["network"] == "GrOWL" and comp["accuracy"] == pytest.approx(r["GrOWL"]["accuracy"], abs=1e-9)
    assert comp["report"]["total"]["params"][1] < comp["report"]["total"]["params"][0]
    # the compacted first layer has one input per cluster of kept rows (weights + bias of 100 hidden units)
    first = comp["report"]["layers"][0]
    assert first["params"] == [785 * 100, (r["GrOWL"]["clusters"] + 1) * 100]
    assert (tmp_path / "GrOWL_compact.pt").stat().st_size == comp["checkpoint_bytes"]


def test_demo_cli_lists_every_option():
    from proxlib.torch.demo import DemoConfig, build_parser

    text = build_parser().format_help()
    for f in DemoConfig.__dataclass_fields__:
        if f in ("regularisers", "extra", "compact_batch", "keep_zero"):
            continue
        assert "--" + f.replace("_", "-") in text, f
    assert "--no-keep-zero" in text and "--regularisers" in text and "(default:" in text


def test_pattern_check_reads_the_table():
    from proxlib.torch.demo import check_pattern

    row = dict(sparsity=0.82, sharing=1.6, compression=9.0, accuracy=0.936)
    res = {"baseline": dict(row, sparsity=0.0, accuracy=0.95), "group-Lasso": row,
           "GrOWL": dict(row, sharing=2.1, compression=12.0, accuracy=0.935)}
    p = check_pattern(res)
    assert all(v[2] for v in p.values())
    res["GrOWL"]["accuracy"] = 0.92  # 3 points below the baseline
    res["GrOWL"]["sharing"] = 1.9  # < 1.25 x 1.6
    p = check_pattern(res)
    assert not p["GrOWL accuracy within 2 points of the baseline"][2]
    assert not p["GrOWL sharing >= 1.25 x group-Lasso's"][2]


# ------------------------------------------------------------------ the seed experiments


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _run(name, tmp_path, capsys, *extra):
    _needs_demo_extra()
    from proxlib.experiments.__main__ import main

    assert main([name, "--quick", "--out", str(tmp_path / name), "--cache", str(tmp_path / "cache"), *extra]) == 0
    out = capsys.readouterr().out
    res = _strict_json(tmp_path / name / "results.json")
    assert (tmp_path / name / f"{name}.png").read_bytes()[:8] == PNG
    assert "compacted (proxlib.torch.compact)" in out
    assert res["compaction"]["report"]["total"]["params"][0] > 0
    _check_tables(out)
    return out, res


def _check_tables(out):
    """Every Markdown table printed has as many header cells as columns (a "|"
    inside a header, as in "||X||", split it: the table did not render)."""
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if i and line.startswith("|---"):
            assert lines[i - 1].count("|") == line.count("|"), (lines[i - 1], line)


def test_an_unknown_experiment_is_named(capsys):
    from proxlib.experiments.__main__ import main

    assert main(["sls"]) == 2
    out = capsys.readouterr()
    assert "unknown experiment 'sls'" in out.err and "experiments: ssl" in out.out
    assert main(["--help"]) == 0 and "unknown" not in capsys.readouterr().err


def test_ast_help_does_not_say_no_guard_is_the_default(capsys):
    # --no-guard stores False in guard; the help formatter appended guard's
    # default, "(default: True)", to --no-guard's line
    from proxlib.experiments.ast_reweighting import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    line = text[text.rindex("--no-guard") + len("--no-guard"):]  # its help, the last option listed
    assert "(default: True)" not in line and "guarded (guard=True)" in line


def test_ast_names_focuss_with_the_exponent_it_ran():
    """The AST experiment printed, titled and plotted its FOCUSS run as
    "FOCUSS (p = 0.5)" whatever --p was (found by the re-weighting review);
    the paper's column keeps the paper's p = 0.5."""
    from proxlib.experiments.ast_reweighting import RULE_NAMES, rule_name

    assert rule_name("focuss", 0.8) == "FOCUSS (p = 0.8)" and rule_name("focuss", 0.5) == RULE_NAMES["focuss"]
    assert rule_name("l1", 0.8) == RULE_NAMES["l1"]
    source = __import__("inspect").getsource(__import__("proxlib.experiments.ast_reweighting", fromlist=["main"]))
    body = source[source.index("def main("):]
    assert "RULE_NAMES[rule]" not in body and "RULE_NAMES[first]" not in body  # only the paper's column reads RULE_NAMES


def test_demo_help_does_not_say_no_keep_zero_is_the_default():
    # --no-keep-zero stores False in keep_zero; the help formatter appended
    # keep_zero's default, "(default: True)", to --no-keep-zero's line
    from proxlib.torch.demo import build_parser

    text = " ".join(build_parser().format_help().split())
    line = text[text.rindex("--no-keep-zero") + len("--no-keep-zero"):text.index("--preference PREFERENCE", text.rindex("--no-keep-zero"))]
    assert "(default: True)" not in line and "stay at zero (keep_zero=True)" in line


def test_gemm_speedup_times_on_one_thread_as_the_ssl_tables_say(monkeypatch):
    # the SSL tables say "speed-ups measured here, median of N, 1 thread", but
    # the lowered-GEMM column was timed on --threads threads
    import torch

    from proxlib.experiments import common as C

    seen = []
    real = C.median_time
    monkeypatch.setattr(C, "median_time", lambda fn, repeats: seen.append(torch.get_num_threads()) or real(fn, repeats))
    conv = torch.nn.Conv2d(2, 3, 3)
    with torch.no_grad():
        conv.weight[0] = 0
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        C.gemm_speedup(conv, torch.randn(2, 2, 6, 6), repeats=1)
        assert seen == [1, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(saved)


def test_ssl_experiment_quick(tmp_path, capsys, one_thread):
    out, res = _run("ssl", tmp_path, capsys)
    assert "Table 1: penalising unimportant filters and channels" in out and "paper 2 | 0.8% | 5—19" in out
    assert "Table 2: learning filter shapes" in out and "paper 5 | 1.0% | 7—14" in out
    ref = res["results"]["reference"]["layers"]
    assert (ref["conv1"]["filters"], ref["conv2"]["filters"], ref["conv2"]["channels"]) == (20, 50, 20)
    assert ref["conv1"]["flop"] == 1.0 and ref["conv2"]["filter_size"] == 500
    for run in ("3", "5"):
        L = res["results"][run]["layers"]
        for layer in ("conv1", "conv2"):
            d = L[layer]
            # the compacted layer keeps exactly the non-zero filters (or fewer: coupled removals)
            assert d["filters"] <= d["nonzero_filters"] <= ref[layer]["filters"]
            assert 0.0 <= d["flop"] <= 1.0 and d["filter_size"] <= d["dense_filter_size"]
    assert res["results"]["3"]["layers"]["conv2"]["filters"] < 50  # the strong quick strengths remove filters


def test_reference_network_is_cached(tmp_path):
    from proxlib.experiments import common as C

    split = C.load_split(64, 32, 0)
    make = lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(split.side**2, 10))  # noqa: E731
    kw = dict(epochs=1, lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=32, seed=0, cache_dir=str(tmp_path), tag="t")
    logs = []
    a, _, cached_a = C.train_baseline(make, split, log=logs.append, **kw)
    b, _, cached_b = C.train_baseline(make, split, log=logs.append, **kw)
    assert (cached_a, cached_b) == (False, True) and "loaded from" in logs[1]
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    # another training option is another reference
    _, _, cached_c = C.train_baseline(make, split, log=logs.append, **dict(kw, lr=0.2))
    assert not cached_c


def _toy_split(n=12):
    from proxlib.experiments import common as C

    X = torch.arange(n * 4, dtype=torch.float32).reshape(n, 1, 2, 2)
    return C.Split(X, torch.arange(n) % 10, X[:4], torch.arange(4), 2, "toy")


def test_reference_of_another_seed_is_another_reference(tmp_path):
    # the seed picks the split and the initial network: a reference trained with
    # seed 0 is not the one for seed 1
    from proxlib.experiments import common as C

    split = _toy_split()
    make = lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 10))  # noqa: E731
    kw = dict(epochs=1, lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=4, cache_dir=str(tmp_path), tag="t", log=lambda s: None)
    assert not C.train_baseline(make, split, seed=0, **kw)[2]
    assert not C.train_baseline(make, split, seed=1, **kw)[2]
    assert C.train_baseline(make, split, seed=1, **kw)[2]


def test_nonzero_fraction_total_counts_weights_not_layers():
    # "in total: non-zero weights / weights": a big dense layer and a small zero one
    from proxlib.experiments import common as C

    big, small = torch.nn.Linear(4, 2), torch.nn.Linear(2, 1)
    with torch.no_grad():
        big.weight.fill_(1.0)
        small.weight.zero_()
    assert C.nonzero_fraction({"big": big, "small": small}) == {"big": 1.0, "small": 0.0, "total": 0.8}


def test_gemm_speedup_kept_fraction_counts_rows_and_columns():
    # the kept FLOP fraction drops zero filters (rows) and zero shape columns
    from proxlib.experiments import common as C

    conv = torch.nn.Conv2d(2, 4, 3)
    with torch.no_grad():
        conv.weight[0] = 0  # one of 4 filters
        conv.weight[:, 1, 0, 0] = 0  # one of 18 shape columns
    _, frac = C.gemm_speedup(conv, torch.randn(1, 2, 5, 5), repeats=1)
    assert frac == pytest.approx(3 * 17 / (4 * 18))


def test_split_loader_shuffles_by_its_seed():
    # "shuffled training batches", the order fixed by the seed
    split = _toy_split(40)

    def order(seed):
        return torch.cat([y for _, y in split.loader(8, seed)]).tolist()

    assert order(0) == order(0) and order(0) != order(1)
    assert sorted(order(0)) == sorted(split.ytr.tolist()) and order(0) != split.ytr.tolist()


def test_load_split_is_shuffled_by_its_seed():
    from proxlib.experiments import common as C

    a, b, c = (C.load_split(30, 10, s) for s in (0, 0, 1))
    assert torch.equal(a.Xtr, b.Xtr) and not torch.equal(a.Xtr, c.Xtr)
    assert a.Xtr.shape[1:] == (1, a.side, a.side)


def test_ast_experiment_quick(tmp_path, capsys, one_thread):
    from proxlib.experiments.ast_reweighting import LAYERS, PAPER

    out, res = _run("ast", tmp_path, capsys)
    assert "Table 1: pruning LeNet-5" in out and "| test error % | 0.86 |" in out
    r = res["results"]
    for rule in ("l1", "focuss"):
        for i, layer in enumerate(LAYERS):
            # AST and the LWC control are pruned to the paper's per-layer density for that rule
            for key in (rule, f"LWC@{rule}"):
                assert r[key]["nonzero"][layer] == pytest.approx(PAPER[rule][i] / 100, abs=2e-3)
        assert r[rule]["n_reweights"] == 4
        assert len(r[rule]["kurtosis_trace"]) == 4
        assert np.isfinite(r[rule]["max_abs_weight"])


def test_cges_experiment_quick(tmp_path, capsys, one_thread):
    out, res = _run("cges", tmp_path, capsys)
    assert "CGES + iterative pruning | 10% | - | 99.16%" in out
    methods = [r["method"] for r in res["runs"]]
    assert methods == ["L2", "L1", "CGES", "CGES (sequential)"]
    for r in res["runs"]:
        assert 0 < r["params"] <= 1 and 0 < r["flop"] <= 1
    # the exact prox minimises the prox objective: the sequential approximation never does better
    for g in res["prox_gap"]:
        assert g["objective_sequential"] >= g["objective_exact"] * (1 - 1e-12)
    assert [round(g["mu"], 6) for g in res["prox_gap"]] == [0.0, round(1 / 3, 6), round(2 / 3, 6), 1.0]


@pytest.mark.parametrize("name, args, option", [
    ("ast", ["--n-train", "-5"], "--n-train"),
    ("ast", ["--n-test", "0"], "--n-test"),
    ("ast", ["--repeats", "0"], "--repeats"),
    ("ast", ["--batch-size", "0"], "--batch-size"),
    ("ast", ["--lr", "-1"], "--lr"),
    ("ast", ["--tau-l1", "0"], "--tau-l1"),
    ("ast", ["--p", "3"], "--p"),
    ("ast", ["--epochs-per-iteration", "0"], "--epochs-per-iteration"),
    ("ssl", ["--ssl-epochs", "-1"], "--ssl-epochs"),
    ("ssl", ["--scale", "-1"], "--scale"),
    ("ssl", ["--threads", "0"], "--threads"),
    ("cges", ["--m", "0.7"], "--m"),
    ("cges", ["--scales", "1", "-4"], "--scales"),
    ("cges", ["--epochs", "-2"], "--epochs"),
    ("cges", ["--weight-decay", "nan"], "--weight-decay"),
    ("cges", ["--seed", "99999999999999999999"], "--seed"),  # was torch's "Overflow when unpacking long long"
])
def test_experiments_refuse_bad_options_before_running(name, args, option, capsys, tmp_path):
    # they were read as given: --n-train -5 trained on 4,995 digits and crashed on
    # 0 test digits, --n-test 0 / --repeats 0 failed after every network had been trained
    from proxlib.experiments.__main__ import main

    with pytest.raises(SystemExit) as e:
        main([name, *args, "--out", str(tmp_path / "out"), "--cache", ""])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and "must be" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, option", [
    (["--epochs", "-5"], "--epochs"),
    (["--retrain-epochs", "-1"], "--retrain-epochs"),
    (["--warmup-epochs", "-1"], "--warmup-epochs"),
    (["--lr", "0"], "--lr"),
    (["--momentum", "-0.5"], "--momentum"),
    (["--group-lasso", "-1"], "--group-lasso"),
    (["--growl-p", "2"], "--growl-p"),
    (["--weight-decay", "inf"], "--weight-decay"),
])
def test_demo_refuses_bad_options_before_running(args, option, capsys, tmp_path):
    # --epochs -5 --retrain-epochs 30 trained the baseline 25 epochs, then two_stage raised;
    # --growl-p 2 raised at the first proximal step
    from proxlib.torch.demo import main

    with pytest.raises(SystemExit) as e:
        main([*args, "--out", str(tmp_path / "out")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and "must be" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, given, expected", [
    ("ast", ["--rules", "l2"], dict(rules=["l2"], n_train=300, iterations=4)),
    ("ast", ["--n-train", "100", "--iterations", "2"], dict(n_train=100, iterations=2, rules=["l1", "focuss"])),
    ("cges", ["--scales", "1", "2", "--methods", "ES"], dict(scales=[1.0, 2.0], methods=["ES"], epochs=1)),
    ("ssl", ["--lr", "0.02", "--runs", "2"], dict(lr=0.02, runs=["2"], scale=2.0, ssl_epochs=2)),
    ("ssl", [], dict(lr=0.05, scale=2.0, runs=["3", "5"], n_train=500)),
])
def test_quick_keeps_the_options_given(name, given, expected, monkeypatch, tmp_path):
    # --quick overwrote them: --quick --rules l2 ran l1 and FOCUSS, --quick --n-train 100 trained on 300
    from proxlib.experiments import common as C
    from proxlib.experiments.__main__ import main

    class Parsed(Exception):
        pass

    def start(args, name):
        raise Parsed(args)

    monkeypatch.setattr(C, "start", start)
    with pytest.raises(Parsed) as e:
        main([name, "--quick", *given, "--out", str(tmp_path)])
    args = e.value.args[0]
    assert {k: getattr(args, k) for k in expected} == expected


def test_demo_checks_the_output_folder_before_training(monkeypatch, capsys, tmp_path):
    # --out naming a file (or anything os.makedirs refuses) trained every network, then
    # raised FileExistsError when saving the figure
    from proxlib.torch import demo

    def run(cfg, **kw):
        raise AssertionError("trained before checking --out")

    monkeypatch.setattr(demo, "run", run)
    taken = tmp_path / "a_file"
    taken.write_text("")
    with pytest.raises(SystemExit) as e:
        demo.main(["--quick", "--out", str(taken)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --out" in err and str(taken) in err


@pytest.mark.parametrize("args, option", [
    (["--seed", "-1"], "--seed"),  # trained, then AffinityPropagation refused random_state=-1
    (["--seed", str(2**32)], "--seed"),
    (["--preference", "nan"], "--preference"),  # trained, then find_tying: "preference must be finite"
    (["--preference", "inf"], "--preference"),
])
def test_demo_refuses_bad_options_before_training(args, option, monkeypatch, capsys, tmp_path):
    from proxlib.torch import demo

    def run(cfg, **kw):
        raise AssertionError(f"trained with {option} {args[-1]}")

    monkeypatch.setattr(demo, "run", run)
    with pytest.raises(SystemExit) as e:
        demo.main(["--quick", *args, "--out", str(tmp_path / "out")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and "must be" in err


def _config_of(argv, monkeypatch):
    """The DemoConfig that ``demo.main(argv)`` would train (its run replaced)."""
    from proxlib.torch import demo

    class Ran(Exception):
        pass

    def run(cfg, **kw):
        raise Ran(cfg)

    monkeypatch.setattr(demo, "run", run)
    with pytest.raises(Ran) as e:
        demo.main(argv)
    return e.value.args[0]


def test_demo_trains_a_regulariser_named_twice_once(monkeypatch, tmp_path):
    # --regularisers GrOWL GrOWL trained the same network twice, the second
    # result replacing the first under its name (found by the CLI review)
    cfg = _config_of(["--regularisers", "GrOWL", "group-Lasso", "GrOWL", "--out", str(tmp_path)], monkeypatch)
    assert cfg.regularisers == ("GrOWL", "group-Lasso")


def test_demo_warm_up_is_at_most_the_epochs_it_is_part_of(monkeypatch, tmp_path):
    # --epochs 2 --warmup-epochs 5 trained 2 warm-up epochs, but the header
    # and results.json said 5 (found by the CLI review)
    for given, warmup in ((["--epochs", "2", "--warmup-epochs", "5"], 2), (["--epochs", "9", "--warmup-epochs", "5"], 5)):
        assert _config_of([*given, "--out", str(tmp_path)], monkeypatch).warmup_epochs == warmup


@pytest.mark.parametrize("given, expected", [
    ([], dict(n_train=1000, n_test=500, hidden=100, epochs=20, retrain_epochs=5, warmup_epochs=3, jobs=1, ap_max_iter=200)),
    (["--epochs", "40", "--jobs", "2", "--hidden", "300"], dict(epochs=40, jobs=2, hidden=300, n_train=1000, retrain_epochs=5)),
    (["--n-train", "3000", "--ap-max-iter", "1000"], dict(n_train=3000, ap_max_iter=1000, epochs=20)),
])
def test_demo_quick_keeps_the_options_given(given, expected, monkeypatch, tmp_path):
    # --quick capped them by min(): --quick --epochs 40 --jobs 2 ran 20 epochs on one job, silently
    cfg = _config_of(["--quick", *given, "--out", str(tmp_path)], monkeypatch)
    assert {k: getattr(cfg, k) for k in expected} == expected


def test_demo_names_the_regulariser_in_what_two_stage_warns_of(monkeypatch):
    """Every configuration's layer is 'fc1': the demo printed "layer 'fc1':
    AffinityPropagation did not converge" without saying whose.  The
    warnings of a configuration's two_stage now carry its name, also where
    two_stage raises after warning; what it warns of is otherwise the same
    (category, location)."""
    import warnings

    from proxlib.torch import demo

    class Stop(Exception):
        pass

    def two_stage(*args, **kwargs):
        warnings.warn("layer 'fc1': AffinityPropagation did not converge; leaving its rows untied", RuntimeWarning)
        raise Stop

    monkeypatch.setattr(demo, "two_stage", two_stage)
    data = (torch.rand(8, 16), torch.randint(0, 10, (8,)), torch.rand(4, 16), torch.randint(0, 10, (4,)))
    with warnings.catch_warnings(record=True) as caught, pytest.raises(Stop):
        warnings.simplefilter("always")
        demo._train_one("GrOWL+l2", demo.DemoConfig(hidden=5), data)
    assert [(w.category, str(w.message)) for w in caught] == [
        (RuntimeWarning, "GrOWL+l2: layer 'fc1': AffinityPropagation did not converge; leaving its rows untied")]
    assert caught[0].filename == __file__  # where the stub warned (two_stage's own warning points at the demo)
