"""Regression tests for the public API's contracts: backends loaded outside
torch.compile, value() in float64, certificates' tolerances in half
precision, detached results for tensors that require grad, penalties checked
when made (and compared by value), half-precision results in their dtype,
lp's threshold, and messages that name the argument."""

from __future__ import annotations

import os
import pathlib

import _procs
import numpy as np
import pytest

import proxlib
from proxlib import _dispatch

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("PROXLIB_BACKEND", None)
    return env


# ------------------------------------------------------------ 1. torch.compile first


_COMPILE_FIRST = """
import warnings
warnings.simplefilter("ignore")
import torch, proxlib
T = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
X = torch.compile(lambda x: proxlib.prox_group_lasso(x, 0.5))(T)
E = proxlib.prox_group_lasso(T, 0.5)
assert torch.equal(X, E), (X, E)
print("ok")
"""


def test_a_prox_compiled_first_in_a_process_works_and_leaves_torch_usable():
    """In a fresh process the first proxlib call made inside torch.compile
    imports the torch backend outside Dynamo's tracing (it used to fail, and
    the failure was cached: every later eager call failed too)."""
    pytest.importorskip("torch")
    out = _procs.python(_COMPILE_FIRST, timeout=300, env=_child_env(), cwd=str(ROOT))
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


def test_a_backend_failure_from_torchs_compiler_is_not_remembered(monkeypatch):
    """A backend import that fails inside torch's compiler is tried again at
    the next call; any other failure is remembered (and reported)."""
    compiler_error = type("InternalTorchDynamoError", (RuntimeError,), {"__module__": "torch._dynamo.exc"})
    calls = []

    def flaky(name):
        calls.append(name)
        if len(calls) == 1:
            raise ImportError("traced import failed") from compiler_error("tracing")
        return "module"

    monkeypatch.setattr(_dispatch, "_loaded", {})
    monkeypatch.setattr(_dispatch, "_why_unavailable", {})
    monkeypatch.setattr(_dispatch, "_import_now", flaky)
    assert _dispatch._load("numpy") is None
    assert _dispatch._load("numpy") == "module"
    assert calls == ["numpy", "numpy"]

    def broken(name):
        calls.append(name)
        raise ImportError("not installed")

    monkeypatch.setattr(_dispatch, "_import_now", broken)
    assert _dispatch._load("numba") is None
    assert _dispatch._load("numba") is None
    assert calls.count("numba") == 1
    assert "not installed" in _dispatch._why_unavailable["numba"]


# ------------------------------------------------------------ 2. value() in float64


@pytest.mark.parametrize("library", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_lp_value_at_p0_is_float64_on_every_backend(library, dtype):
    """Lp(lam, 0).value counts non-zeros times lam in float64 (torch's
    count_nonzero gives an int64 tensor, which times a float was float32)."""
    x = np.ones(11, dtype=dtype)
    if library == "torch":
        torch = pytest.importorskip("torch")
        x = torch.from_numpy(x)
    assert proxlib.Lp(0.7, 0).value(x) == 0.7 * 11
    assert type(proxlib.Lp(0.7, 0).value(x)) is float


# ------------------------------------------------------------ 3. certificates in half precision


def _penalties_for(shape):
    G, m = shape
    return {
        "owl": proxlib.OWL(np.linspace(1.0, 0.1, G * m)),
        "growl": proxlib.GrOWL(np.linspace(1.0, 0.1, G)),
        "group_lasso": proxlib.GroupLasso(0.5),
        "exclusive_lasso": proxlib.ExclusiveLasso(0.1),
        "group_exclusive": proxlib.GroupExclusive(0.3, 0.5),
        "weighted_l1": proxlib.WeightedL1(0.3),
        "weighted_l2sq": proxlib.WeightedL2Sq(0.3),
        "lp": proxlib.Lp(0.3, 0.5),
    }


@pytest.mark.parametrize("half", ["numpy-float16", "torch-float16", "torch-bfloat16"])
@pytest.mark.parametrize("name", sorted(proxlib.OPERATORS))
def test_proxlibs_half_precision_prox_passes_its_certificate(name, half):
    """A half-precision prox is rounded to its dtype: its certificate's
    tolerance (and residual_tolerance's default) is that dtype's, not
    float32's, and proxlib's own result passes it."""
    library, dtype = half.split("-")
    rng = np.random.default_rng(7)
    pen = _penalties_for((6, 8))[name]
    for scale in (1e-3, 1.0, 100.0):
        v = rng.standard_normal((6, 8)) * scale
        if library == "torch":
            torch = pytest.importorskip("torch")
            v = torch.tensor(v, dtype=getattr(torch, dtype))
        else:
            v = v.astype(dtype)
        x = pen.prox(v, 0.7)
        cert = proxlib.certificates.certify(pen, v, x, 0.7)
        assert cert.tolerance == proxlib.certificates.residual_tolerance(pen, v, 0.7)
        assert cert.ok, (scale, cert.residual, cert.tolerance)


def test_residual_tolerance_takes_every_spelling_of_a_float_dtype():
    torch = pytest.importorskip("torch")
    tol = proxlib.certificates.residual_tolerance
    pen, v = proxlib.WeightedL1(1.0), np.ones(3)
    eps32 = tol(pen, v.astype(np.float32))
    for dtype in (np.float32, np.dtype("float32"), "float32", torch.float32):
        assert tol(pen, v, dtype=dtype) == eps32
    for dtype in (np.float64, float, "float64", torch.float64):
        assert tol(pen, v, dtype=dtype) == tol(pen, v)
    assert tol(pen, v, dtype=np.float16) == tol(pen, v.astype(np.float16)) == 16 * 2 * 2.0**-10 + 64 * 2.0**-24 / 2
    assert tol(pen, v, dtype=torch.bfloat16) == 16 * 2 * 2.0**-7 + 64 * 2.0**-133 / 2
    for bad in (np.int32, "int64", object, torch.int32):
        with pytest.raises(TypeError, match="dtype"):
            tol(pen, v, dtype=bad)


# ------------------------------------------------------------ 4. tensors that require grad


def _every_public_call(P, torch):
    """(label, call) for every public function of P (4 x 5), results of any kind."""
    g = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)  # a scalar that requires grad
    owl_w = torch.linspace(1.0, 0.1, 20, dtype=torch.float64, requires_grad=True)
    pens = _penalties_for((4, 5))
    calls = [
        ("prox_owl", lambda: proxlib.prox_owl(P, owl_w)),
        ("prox_growl", lambda: proxlib.prox_growl(P, owl_w[:4])),
        ("prox_group_lasso", lambda: proxlib.prox_group_lasso(P, g, g)),
        ("prox_exclusive_lasso", lambda: proxlib.prox_exclusive_lasso(P, 0.5)),
        ("prox_group_exclusive", lambda: proxlib.prox_group_exclusive(P, 0.5, 0.5)),
        ("prox_weighted_l1", lambda: proxlib.prox_weighted_l1(P, P.abs(), metric=P.abs() + 1)),
        ("prox_weighted_l2sq", lambda: proxlib.prox_weighted_l2sq(P, g)),
        ("prox_lp", lambda: proxlib.prox_lp(P, 0.3, 0.5)),
        ("prox_exclusive_lasso_thesis", lambda: proxlib.prox_exclusive_lasso_thesis(P, 0.5)),
        ("prox_group_exclusive_sequential", lambda: proxlib.prox_group_exclusive_sequential(P, 0.5, 0.5)),
        ("reweight_l1", lambda: proxlib.reweight_l1(P, 0.1).weights),
        ("reweight_l2", lambda: proxlib.reweight_l2(P, 0.1).omega),
        ("reweight_focuss", lambda: proxlib.reweight_focuss(P, 0.5, 0.1).weights),
        ("OWL.weights", lambda: proxlib.OWL(owl_w).weights),
        ("GrOWL.weights", lambda: proxlib.GrOWL(owl_w[:4]).weights),
    ]
    calls += [(f"{name}.value", lambda pen=pen: pen.value(P)) for name, pen in pens.items() if name not in ("owl", "growl")]
    calls += [(f"{name}.certify", lambda pen=pen: proxlib.certificates.certify(pen, P, P, 0.5).violation)
              for name, pen in pens.items() if name not in ("owl", "growl")]
    return calls


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16"])
def test_tensors_that_require_grad_give_detached_results_and_no_warning(dtype):
    """An nn.Parameter (or any tensor that requires grad) is read without
    autograd: no UserWarning from a scalar read, every result detached
    (requires_grad False, no grad_fn), the input unchanged."""
    import warnings

    torch = pytest.importorskip("torch")
    P = torch.nn.Parameter(torch.randn(4, 5, generator=torch.Generator().manual_seed(3), dtype=getattr(torch, dtype)))
    before = P.detach().clone()
    for label, call in _every_public_call(P, torch):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = call()
        if isinstance(out, torch.Tensor):
            assert not out.requires_grad and out.grad_fn is None, label
    assert torch.equal(P.detach(), before) and P.requires_grad


# ------------------------------------------------------------ 5. penalties checked when made, compared by value


BAD_PARAMETERS = [
    (lambda: proxlib.WeightedL1(-1.0), lambda: proxlib.prox_weighted_l1(np.ones(3), -1.0), ValueError, "weights must be >= 0"),
    (lambda: proxlib.WeightedL1(float("nan")), lambda: proxlib.prox_weighted_l1(np.ones(3), float("nan")), ValueError, "weights contains NaN"),
    (lambda: proxlib.WeightedL1("abc"), lambda: proxlib.prox_weighted_l1(np.ones(3), "abc"), TypeError, "weights must be a real"),
    (lambda: proxlib.WeightedL1(np.array([1.0, -2.0])), lambda: proxlib.prox_weighted_l1(np.ones(2), np.array([1.0, -2.0])), ValueError, "weights must be >= 0"),
    (lambda: proxlib.WeightedL2Sq(-1.0), lambda: proxlib.prox_weighted_l2sq(np.ones(3), -1.0), ValueError, "weights must be >= 0"),
    (lambda: proxlib.GroupLasso(0.5, group_weights="foo"), lambda: proxlib.prox_group_lasso(np.ones((3, 2)), 0.5, group_weights="foo"),
     ValueError, "group_weights must be None, 'sqrt' or an array"),
    (lambda: proxlib.GroupLasso(0.5, group_weights=-np.ones(3)), lambda: proxlib.prox_group_lasso(np.ones((3, 2)), 0.5, group_weights=-np.ones(3)),
     ValueError, "group_weights must be >= 0"),
    (lambda: proxlib.ExclusiveLasso(0.5, group_weights=np.ones((3, 1))), lambda: proxlib.prox_exclusive_lasso(np.ones((3, 2)), 0.5, group_weights=np.ones((3, 1))),
     ValueError, "group_weights must be 1-D"),
    (lambda: proxlib.GroupExclusive(0.5, 0.5, group_weights=[1.0, np.inf]), lambda: proxlib.prox_group_exclusive(np.ones((2, 2)), 0.5, 0.5, group_weights=[1.0, np.inf]),
     ValueError, "group_weights contains NaN"),
]


BAD_PARAMETERS += [
    # groups= labels too (GroupLasso(0.5, groups=[-1, 0]) was accepted and failed only at the prox)
    (lambda: proxlib.GroupLasso(0.5, groups=[0, -1, 1]), lambda: proxlib.prox_group_lasso(np.ones(3), 0.5, groups=[0, -1, 1]),
     ValueError, "groups labels must be >= 0"),
    (lambda: proxlib.ExclusiveLasso(0.5, groups=[0.0, 1.0]), lambda: proxlib.prox_exclusive_lasso(np.ones(2), 0.5, groups=[0.0, 1.0]),
     TypeError, "groups must hold integer labels"),
    (lambda: proxlib.GroupExclusive(0.5, 0.5, groups="ab"), lambda: proxlib.prox_group_exclusive(np.ones(2), 0.5, 0.5, groups="ab"),
     TypeError, "groups must hold integer labels"),
    (lambda: proxlib.GroupLasso(0.5, groups=np.zeros((2, 2), dtype=int)),
     lambda: proxlib.prox_group_lasso(np.ones(4), 0.5, groups=np.zeros((2, 2), dtype=int)), ValueError, "groups must be 1-D"),
    (lambda: proxlib.GroupLasso(0.5, groups=np.array([0, 2**63], dtype=np.uint64)),
     lambda: proxlib.prox_group_lasso(np.ones(2), 0.5, groups=np.array([0, 2**63], dtype=np.uint64)), ValueError, "groups labels must be < 2"),
]


@pytest.mark.parametrize("make, prox, error, message", BAD_PARAMETERS)
def test_penalties_check_their_parameters_when_made_with_the_prox_functions_messages(make, prox, error, message):
    with pytest.raises(error, match=message) as made:
        make()
    with pytest.raises(error) as proxed:
        prox()
    assert str(made.value) == str(proxed.value)


def test_elementwise_weights_are_kept_checked_and_in_float64():
    assert proxlib.WeightedL1(1).weights == 1.0 and type(proxlib.WeightedL1(np.float32(0.5)).weights) is float
    w = proxlib.WeightedL1([1, 2]).weights
    assert isinstance(w, np.ndarray) and w.dtype == np.float64
    np.testing.assert_array_equal(proxlib.WeightedL1([1, 2]).prox(np.array([3.0, 3.0])), [2.0, 1.0])


@pytest.mark.parametrize("make", [
    lambda w: proxlib.OWL(w),
    lambda w: proxlib.GrOWL(w),
    lambda w: proxlib.WeightedL1(w),
    lambda w: proxlib.WeightedL2Sq(w),
    lambda w: proxlib.GroupLasso(0.5, group_weights=w),
    lambda w: proxlib.ExclusiveLasso(0.5, group_weights=w),
    lambda w: proxlib.GroupExclusive(0.5, 0.25, group_weights=w),
    lambda w: proxlib.GroupLasso(0.5, groups=np.round(w * 2).astype(np.int64)),
])
def test_penalties_holding_arrays_compare_and_hash_by_value(make):
    import pickle

    w = np.array([2.0, 1.0, 0.5])
    pen = make(w)
    again = pickle.loads(pickle.dumps(pen))
    assert pen == again and not pen != again
    assert hash(pen) == hash(again) and {pen: 1}[again] == 1
    assert pen == make(w.copy())
    assert pen != make(np.array([2.0, 1.0, 0.25]))
    assert pen != make(w[:2])
    assert pen != "not a penalty" and pen != proxlib.Lp(0.5, 0.5)


def test_penalty_equality_compares_library_and_class():
    torch = pytest.importorskip("torch")
    w = np.array([2.0, 1.0])
    assert proxlib.OWL(w) != proxlib.OWL(torch.tensor(w))
    assert proxlib.OWL(torch.tensor(w)) == proxlib.OWL(torch.tensor(w))
    assert proxlib.WeightedL1(0.5) != proxlib.WeightedL2Sq(0.5)
    assert proxlib.WeightedL1(0.5) != proxlib.WeightedL1(np.array(0.5))
    assert proxlib.Lp(1, 0.5) == proxlib.Lp(1.0, 0.5) and hash(proxlib.Lp(1, 0.5)) == hash(proxlib.Lp(1.0, 0.5))
    assert proxlib.GroupLasso(0.5) != proxlib.GroupLasso(0.5, group_weights="sqrt")


# ------------------------------------------------------------ 6. re-weighting in half precision


@pytest.mark.parametrize("rule", ["l1", "l2", "focuss"])
@pytest.mark.parametrize("half", ["numpy-float16", "torch-float16", "torch-bfloat16"])
def test_reweighting_rounds_once_to_thetas_half_precision_dtype(rule, half):
    """omega and the weights come back in theta's own dtype (float16 and
    bfloat16 included), each the float64 value rounded once to it."""
    library, dtype = half.split("-")
    theta64 = np.array([0.0, 0.3, -1.7, 12.5, 1e-3])
    call = {"l1": lambda t: proxlib.reweight_l1(t, 0.01), "l2": lambda t: proxlib.reweight_l2(t, 0.01),
            "focuss": lambda t: proxlib.reweight_focuss(t, 0.5, 0.01)}[rule]
    if library == "torch":
        torch = pytest.importorskip("torch")
        theta = torch.tensor(theta64, dtype=getattr(torch, dtype))
        exact = call(theta.to(torch.float64))
        expected = {k: getattr(exact, k).to(theta.dtype) for k in ("omega", "weights")}
    else:
        theta = theta64.astype(dtype)
        exact = call(theta.astype(np.float64))
        expected = {k: getattr(exact, k).astype(dtype) for k in ("omega", "weights")}
    got = call(theta)
    for k in ("omega", "weights"):
        assert getattr(got, k).dtype == theta.dtype, k
        assert (getattr(got, k) == expected[k]).all(), k


def test_reweighting_names_the_half_precision_dtype_it_overflows():
    with pytest.raises(ValueError, match="not representable in float16"):
        proxlib.reweight_l1(np.array([0.0], dtype=np.float16), 1e-6)  # 1/tau > 65504


# ------------------------------------------------------------ 7. lp_threshold and prox_lp


def test_lp_threshold_documents_its_exact_relation_to_prox_lp():
    """lp_threshold is the exact threshold to a few ulps; prox_lp decides by
    comparing objectives, so at |v| = tau itself it may be non-zero: the
    docstrings say so instead of "below which the lp prox is 0"."""
    doc = proxlib.lp_threshold.__doc__
    assert "below which the lp prox is 0" not in doc
    assert "tau * (1 - 1e-9)" in doc and "may be either" in doc
    assert "lp_threshold` for the exact" in proxlib.prox_lp.__doc__.replace("\n    ", " ")
    lam, p = 1357.38, 1 / 2
    tau = proxlib.lp_threshold(lam, p)
    for backend in ("numpy", "numba"):  # the documented example, on both CPU backends
        if backend == "numba":
            pytest.importorskip("numba")
        with proxlib.use_backend(backend):
            assert proxlib.prox_lp(np.array([tau]), lam, p)[0] != 0


@pytest.mark.parametrize("backend", ["numpy", "numba", "torch"])
def test_prox_lp_thresholds_as_documented(backend):
    """0 for |v| <= lp_threshold * (1 - 1e-9), non-zero from lp_threshold *
    (1 + 1e-9) (p at most 1 - 1e-6); for p = 0 and p = 1 exactly at
    lp_threshold (0 at tau, non-zero one ulp above)."""
    if backend == "numba":
        pytest.importorskip("numba")
    wrap = lambda a: a  # noqa: E731
    if backend == "torch":
        torch = pytest.importorskip("torch")
        wrap = torch.from_numpy
    rng = np.random.default_rng(11)
    with proxlib.use_backend(backend):
        for _ in range(300):
            lam = float(10.0 ** rng.uniform(-200, 200))
            p = float(rng.choice([0.0, 1.0, 0.5, 2 / 3, rng.uniform(0.0, 1.0 - 1e-6)]))
            tau = proxlib.lp_threshold(lam, p)
            if p in (0.0, 1.0):
                v = np.array([tau, np.nextafter(tau, np.inf)])
            else:
                v = np.array([tau * (1 - 1e-9), tau * (1 + 1e-9)])
            x = np.asarray(proxlib.prox_lp(wrap(v), lam, p))
            assert x[0] == 0 and x[1] != 0, (lam, p, tau, x)


def test_hard_threshold_where_two_lam_overflows():
    # p = 0: tau = sqrt(2 lam), finite for every finite lam ("never exceeds
    # the largest float64"), also at lam = 2^1023 where 2 lam is 2^1024
    assert proxlib.lp_threshold(2.0**1023, 0.0) == 2.0**512
    big = float(np.finfo(np.float64).max)
    assert proxlib.lp_threshold(big, 0.0) == float(np.sqrt(big / 2)) * 2


# ------------------------------------------------------------ 8. messages and dtypes


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support")
@pytest.mark.parametrize("kind", ["sparse_coo", "sparse_csr", "meta"])
def test_sparse_and_meta_tensors_raise_a_type_error_naming_the_argument(kind):
    torch = pytest.importorskip("torch")
    dense = torch.randn(4, 5, dtype=torch.float64)
    bad = {"sparse_coo": lambda: dense.to_sparse(), "sparse_csr": lambda: dense.to_sparse_csr(),
           "meta": lambda: torch.empty(4, 5, dtype=torch.float64, device="meta")}[kind]()
    with pytest.raises(TypeError, match=r"^W is a "):
        proxlib.prox_group_lasso(bad, 0.5)
    with pytest.raises(TypeError, match=r"^v is a "):
        proxlib.prox_weighted_l1(bad, 0.5)
    with pytest.raises(TypeError, match=r"^weights is a "):
        proxlib.prox_weighted_l1(dense, bad)
    with pytest.raises(TypeError, match=r"^x is a "):
        proxlib.GroupLasso(0.5).value(bad)


@pytest.mark.parametrize("layout", ["strided", "jagged"])
def test_nested_tensors_and_meta_scalars_raise_a_type_error_naming_the_argument(layout):
    """Nested tensors (as data, weights, group weights, metric, labels or a
    scalar) and a scalar parameter given as a meta tensor are refused with a
    TypeError naming the argument; a strided nested tensor used to raise
    torch's "Internal error: NestedTensorImpl doesn't support sizes" (from
    asking for its shape), a meta step "Tensor.item() cannot be called on
    meta tensors"."""
    torch = pytest.importorskip("torch")
    nested = torch.nested.nested_tensor([torch.ones(2), torch.ones(3)], layout=getattr(torch, layout))
    v = torch.randn(5, dtype=torch.float64)
    calls = {
        "v": lambda: proxlib.prox_weighted_l1(nested, 0.5),
        "W": lambda: proxlib.prox_group_lasso(nested, 0.5),
        "weights": lambda: proxlib.prox_owl(v, nested),
        "group_weights": lambda: proxlib.prox_group_lasso(v, 0.5, group_weights=nested),
        "metric": lambda: proxlib.prox_group_lasso(v, 0.5, metric=nested),
        "groups": lambda: proxlib.prox_group_lasso(v, 0.5, groups=nested),
        "lam": lambda: proxlib.prox_group_lasso(v, nested),
        "x": lambda: proxlib.GroupLasso(0.5).value(nested),
    }
    for name, call in calls.items():
        with pytest.raises(TypeError, match=rf"^{name} is a "):
            call()
    with pytest.raises(TypeError, match=r"^step is a meta tensor"):
        proxlib.prox_group_lasso(v, 0.5, torch.tensor(0.5, device="meta"))


@pytest.mark.parametrize("name", ["growl", "group_lasso", "exclusive_lasso", "group_exclusive"])
def test_row_penalties_value_names_its_argument_x(name):
    with pytest.raises(ValueError, match=r"^x must have at least one dimension"):
        _penalties_for((1, 1))[name].value(np.array(1.0))


@pytest.mark.parametrize("builder", [
    lambda dtype: proxlib.owl_weights_constant(3, 0.5, dtype=dtype),
    lambda dtype: proxlib.owl_weights_oscar(3, 0.5, 0.25, dtype=dtype),
    lambda dtype: proxlib.owl_weights_stairwise(3, 0.5, 0.25, 2, dtype=dtype),
    lambda dtype: proxlib.owl_weights_piecewise_linear(3, 1.0, 0.25, 0.5, dtype=dtype),
    lambda dtype: proxlib.owl_weights_spike(3, 0.5, dtype=dtype),
])
def test_weight_builders_take_torch_dtypes_and_refuse_non_float_dtypes(builder):
    torch = pytest.importorskip("torch")
    ref = builder(None)
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        w = builder(dtype)
        assert isinstance(w, torch.Tensor) and w.dtype == dtype and w.device.type == "cpu"
        assert torch.equal(w, torch.from_numpy(ref).to(dtype))
    assert builder(float).dtype == np.float64 and builder(np.float32).dtype == np.float32
    for bad in (np.int32, torch.int64, "int8", object):
        with pytest.raises(TypeError, match="dtype"):
            builder(bad)


def test_integer_tensors_give_float64_as_documented():
    torch = pytest.importorskip("torch")
    readme = (ROOT / "README.md").read_text()
    assert "integer tensors give float64" in " ".join(readme.split())
    X = proxlib.prox_group_lasso(torch.tensor([[3, 4], [0, 1]]), 1.0)
    assert X.dtype == torch.float64
    np.testing.assert_allclose(X.numpy(), [[2.4, 3.2], [0.0, 0.0]])


def test_like_refuses_a_device_tensor_for_a_cpu_input(monkeypatch):
    """A tensor on another device than the CPU (CUDA; meta here, and CUDA
    through a mocked device check) given for a CPU tensor is refused, not
    copied to the host; CPU weights for any input are taken."""
    torch = pytest.importorskip("torch")
    from proxlib import _validate

    cpu = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(TypeError, match="^weights is on device meta but the input is on the CPU"):
        _validate.like(torch.ones(3, device="meta"), cpu, "weights")
    on_gpu = torch.ones(3)
    real_device = _validate.device
    monkeypatch.setattr(_validate, "device", lambda x: "cuda:0" if x is on_gpu else real_device(x))
    with pytest.raises(TypeError, match="^metric is on device cuda:0"):
        _validate.like(on_gpu, cpu, "metric")
    with pytest.raises(TypeError, match="^metric is on device cuda:0"):
        _validate.like(on_gpu, np.zeros(3), "metric")
    assert torch.equal(_validate.like(torch.ones(3), cpu, "weights"), torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("route", ["torch", "numba"])
def test_tensors_with_the_negative_bit_are_read_as_their_values(route, monkeypatch):
    """A float64 CPU tensor with torch's negative bit set (a lazy negation:
    ``z.conj().imag`` of a complex ``z``) is a valid real tensor.  As data,
    weights, group weights or metric it gives the result of the same values
    without the bit (Numba's route used to fail in ``Tensor.numpy()``:
    "Can't call numpy() on Tensor that has negative bit set"), and is left
    as it was."""
    torch = pytest.importorskip("torch")
    if route == "numba" and "numba" not in proxlib.available_backends():
        pytest.skip("no numba")
    from proxlib.backends import torch_dev

    monkeypatch.setattr(torch_dev, "CPU_KERNELS", route)

    def lazily_negated(t):
        out = torch.complex(torch.zeros_like(t), -t).conj().imag
        assert out.is_neg() and torch.equal(out, t)
        return out

    v = torch.tensor([[3.0, -1.0, 2.0], [0.5, 0.0, -4.0]], dtype=torch.float64)
    w = torch.tensor([0.9, 0.7, 0.5, 0.3, 0.2, 0.1], dtype=torch.float64)
    d = torch.tensor([[1.0, 2.0, 0.5], [1.5, 1.0, 3.0]], dtype=torch.float64)
    calls = [
        lambda v, w, d: proxlib.prox_owl(v, w),
        lambda v, w, d: proxlib.prox_owl(v.resolve_neg().numpy(), w),  # NumPy data, tensor weights
        lambda v, w, d: proxlib.prox_growl(v, w[:2]),
        lambda v, w, d: proxlib.prox_group_lasso(v, 0.5, group_weights=w[:2], metric=d),
        lambda v, w, d: proxlib.prox_exclusive_lasso(v, 0.5, group_weights=w[:2]),
        lambda v, w, d: proxlib.prox_group_exclusive(v, 0.5, 0.5),
        lambda v, w, d: proxlib.prox_weighted_l1(v, w.reshape(2, 3)),
        lambda v, w, d: proxlib.prox_weighted_l2sq(v, 0.5, metric=d),
        lambda v, w, d: proxlib.prox_lp(v, 0.5, 0.5),
        lambda v, w, d: proxlib.prox_group_exclusive_sequential(v, 0.5, 0.5),
    ]
    vn, wn, dn = lazily_negated(v), lazily_negated(w), lazily_negated(d)
    for call in calls:
        expected = call(v, w, d)
        for args in ((vn, w, d), (v, wn, d), (v, w, dn)):
            got = call(*args)
            assert type(got) is type(expected) and got.dtype == expected.dtype
            np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    assert vn.is_neg() and torch.equal(vn, v) and wn.is_neg() and dn.is_neg()
    assert proxlib.GroupLasso(0.5).value(vn) == proxlib.GroupLasso(0.5).value(v)


def test_weight_builders_refuse_bfloat16_for_a_numpy_result_with_a_type_error_naming_dtype():
    """dtype="bfloat16" (no like=), or a bfloat16 dtype with like= a NumPy
    array, asks for a NumPy result NumPy cannot hold: it gave NumPy's "data
    type 'bfloat16' not understood" or an AttributeError from array_api_compat."""
    torch = pytest.importorskip("torch")
    for kw in (dict(dtype="bfloat16"), dict(dtype=torch.bfloat16, like=np.zeros(2)), dict(dtype="bfloat16", like=np.zeros(2))):
        with pytest.raises(TypeError, match="dtype bfloat16"):
            proxlib.owl_weights_oscar(3, 0.5, 0.25, **kw)
    w = proxlib.owl_weights_oscar(3, 0.5, 0.25, dtype="bfloat16", like=torch.zeros(2))
    assert w.dtype == torch.bfloat16
