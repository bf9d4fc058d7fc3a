"""The Numba OWL kernel's long-vector path past its size thresholds.

n = 300_000 entries: the keys partitioned around a sampled median and the
two parts sorted at once (parallel calls on >= 2^18 entries), the PAVA split in two halves and merged (supports
>= 2^16 entries, serial and parallel), and, for float64, keys that drop
ib = 19 low magnitude bits, so magnitudes that agree to 44 bits form one long
run of equal keys that must be re-sorted by the full magnitudes (the argsort
branch).  Checked against the NumPy reference (same exact zero pattern,
values to the rounding of block means), the serial variant bit for bit, and
bitwise equal outputs for equal magnitudes.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import proxlib
from test_numba_extremes import _cancelling_owl

pytestmark = pytest.mark.skipif("numba" not in proxlib.available_backends(), reason="numba does not import here")

if "numba" in proxlib.available_backends():
    from proxlib.backends import numba_cpu as NB
from proxlib.backends import numpy_ref as REF

N = 300_000


def _case(kind, dtype, rng):
    if kind == "cancelling":  # ties, zeros, z = |v| - w tiny of either sign
        return _cancelling_owl(rng, N, dtype)
    if kind == "near_ties":  # |v| agree to ~40 bits: one long run of equal truncated float64 keys
        v = 1.0 + rng.standard_normal(N) * 1e-12
        v *= rng.choice([-1.0, 1.0], N)
        w = np.linspace(2e-12, 0.0, N)
    elif kind == "ties":  # few distinct magnitudes: every block boundary near a tie
        v = rng.integers(-6, 7, N) / 4.0
        w = np.linspace(1.0, 0.0, N)
    else:
        v = rng.standard_normal(N)
        w = np.linspace(1.0, 0.0, N)
    return v.astype(dtype), w.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["gaussian", "cancelling", "near_ties", "ties"])
def test_owl_past_the_split_thresholds(kind, dtype):
    assert N >= NB._OWL_SPLIT_SORT and N >= NB._OWL_SPLIT_PAVA
    rng = np.random.default_rng(sum(map(ord, kind + np.dtype(dtype).name)))
    v, w = _case(kind, dtype, rng)
    v0, w0 = v.copy(), w.copy()
    x = NB.owl(v, w, parallel=True)
    np.testing.assert_array_equal(v, v0)  # inputs untouched
    np.testing.assert_array_equal(w, w0)
    assert x.dtype == v.dtype and x.shape == v.shape
    ref = REF.owl(v, w)
    np.testing.assert_array_equal(x == 0, ref == 0)  # the exact zero pattern
    scale = float(np.abs(v).max()) + float(w.max())
    np.testing.assert_allclose(x.astype(np.float64), ref.astype(np.float64), rtol=0,
                               atol=4 * N * float(np.finfo(np.float64).eps) * scale
                               + 2 * float(np.finfo(dtype).eps) * scale)
    np.testing.assert_array_equal(np.signbit(x), np.signbit(v))  # sign kept, -0.0 included
    np.testing.assert_array_equal(NB.owl(v, w, parallel=False), x)  # the serial variant, bit for bit
    # equal magnitudes, bitwise equal outputs (whatever order the sort left them in)
    a = np.abs(v)
    order = np.argsort(a, kind="stable")
    same = a[order][1:] == a[order][:-1]
    np.testing.assert_array_equal(np.abs(x[order])[1:][same], np.abs(x[order])[:-1][same])


def _adversarial_vectors(dtype):
    """Inputs whose sampled median is a poor pivot: every magnitude equal,
    all zeros (signed), two values, already sorted, reversed, inf and
    subnormals among the magnitudes."""
    rng = np.random.default_rng(7)
    f = np.finfo(dtype)
    two = rng.choice([-1.5, 2.0], N)
    ramp = np.linspace(0.0, 3.0, N)
    odd = rng.standard_normal(N)
    odd[::5] = np.inf
    odd[1::7] = float(f.smallest_subnormal) * 3
    odd[2::11] = -0.0
    return {
        "equal": np.full(N, -0.75), "zeros": np.where(rng.random(N) < 0.5, 0.0, -0.0),
        "two": two, "sorted": ramp, "reversed": ramp[::-1].copy(), "odd": odd,
    }


@pytest.fixture(params=["numpy", "radix"])
def key_sort(request, monkeypatch):
    """Each sort of the OWL keys (numba_cpu.KEY_SORT), whichever "auto"
    picks on this machine."""
    monkeypatch.setattr(NB, "KEY_SORT", request.param)
    return request.param


@pytest.mark.parametrize("in_region", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_partitioned_key_sort_equals_one_sort(dtype, key_sort, in_region, monkeypatch):
    """The parallel path's partition + two sorts give exactly the serial
    path's single sort, also where the pivot splits the keys unevenly (or not
    at all), with either sort of the keys, and the radix sort's parts sorted
    in one parallel region or in a helper thread (_RADIX_PARTS_IN_REGION)."""
    assert N >= NB._OWL_SPLIT_SORT
    monkeypatch.setattr(NB, "_RADIX_PARTS_IN_REGION", in_region)
    ibits, mask, magbits = ((np.int64, np.int64(0x7FFFFFFFFFFFFFFF), 63) if dtype == np.float64
                            else (np.int32, np.int64(0x7FFFFFFF), 31))
    ib = (N - 1).bit_length()
    t = max(0, magbits + ib + 1 - 64)
    for name, v in _adversarial_vectors(dtype).items():
        vb = v.astype(dtype).view(ibits)
        par = NB._owl_sorted_keys(vb, mask, t, ib, True)
        ser = NB._owl_sorted_keys(vb, mask, t, ib, False)
        np.testing.assert_array_equal(par, ser, err_msg=name)
        assert np.all(par[1:] > par[:-1]), name  # distinct, increasing (as signed integers: _owl_key_flip)
        flip = NB._owl_key_flip(mask, t, ib)
        unsigned = (par ^ flip).view(np.uint64)
        assert np.all(unsigned[1:] > unsigned[:-1]), name  # the unsigned keys' order


@pytest.mark.parametrize("seed", range(3))
def test_runs_of_equal_truncated_keys_sorted_wherever_they_fall(seed):
    """float64 keys drop the low magnitude bits, and _owl_order_runs sorts
    each run of equal truncated keys by the full magnitudes.  It tests
    _OWL_RUN_SKIP positions at once and scans only the blocks that hold a
    run: runs of every length (2 to three blocks), starting anywhere in a
    block and crossing its end, must all come out sorted."""
    rng = np.random.default_rng(seed)
    n = 200_000
    ib = (n - 1).bit_length()
    t = 63 + ib + 1 - 64  # magnitude bits dropped from a float64 key
    # in sorted order: 100-400 distinct keys (blocks the test skips), then a
    # run of 2 (half the runs: one pair, the easiest to miss at a block's
    # edge) to three blocks' length, and again
    segments = []
    while sum(map(len, segments)) < n:
        segments.append(np.ones(rng.integers(100, 401), dtype=np.int64))
        segments.append([2 if rng.random() < 0.5 else int(rng.integers(3, 3 * NB._OWL_RUN_SKIP + 1))])
    lengths = np.concatenate(segments)
    group = np.repeat(np.arange(lengths.size), lengths)[:n]
    # a group shares its truncated key: a base on a multiple of 2^t ulps, plus < 2^t ulps
    bits = (np.float64(1.0).view(np.int64) + (group.astype(np.int64) << (t + 2))
            + rng.integers(0, 2**t, size=n))
    v = bits.view(np.float64) * rng.choice([-1.0, 1.0], n)
    rng.shuffle(v)
    vbits = v.view(np.int64)
    mask = np.int64(0x7FFFFFFFFFFFFFFF)
    keys = NB._owl_sorted_keys(vbits, mask, t, ib, False)
    s = np.empty(n)
    NB._owl_unpack(vbits, mask, t, ib, NB._owl_key_flip(mask, t, ib), keys, s.view(np.int64), 0, n)
    NB._owl_order_runs(s, keys, ib, 0, n)
    np.testing.assert_array_equal(s, np.sort(np.abs(v)))  # sorted by the full magnitudes
    index = (keys >> 1) & ((1 << ib) - 1)
    np.testing.assert_array_equal(np.abs(v)[index], s)  # each key still names its entry


def _radix_sorted(keys, low=0):
    out = keys.copy()
    tmp = np.full(keys.shape[0] + 3, 12345, dtype=np.int64)  # (longer than needed: only its first n are used)
    NB._radix_sort(out, tmp, low)
    return out


@given(arrays(np.int64, st.integers(0, 300), elements=st.integers(-(2**63), 2**63 - 1)))
def test_radix_sort_equals_numpy_sort(keys):
    """The OWL keys' radix sort orders any int64 keys as NumPy does (signed
    order): the whole range, negatives, duplicates, empty and one key."""
    np.testing.assert_array_equal(_radix_sorted(keys), np.sort(keys))


@pytest.mark.parametrize("digits", [(0,), (7,), (0, 1), (3, 7), (0, 2, 5), tuple(range(8))])
def test_radix_sort_whatever_digits_vary(digits):
    """Keys that differ in only some of their eight bytes: the passes over
    the other bytes are skipped, so an odd number of passes ends in the
    scratch (and is copied back) and an even one in place; signed order
    across the top byte's sign bit (digit 7)."""
    rng = np.random.default_rng(len(digits) * 31 + digits[0])
    n = 5000
    base = np.int64(0x0123456789ABCDEF)
    keys = np.full(n, base, dtype=np.int64)
    for d in digits:
        keys ^= rng.integers(0, 256, n, dtype=np.int64) << (8 * d)
    keys[::7] = keys[3]  # duplicates
    for case in (keys, np.sort(keys), np.sort(keys)[::-1].copy()):
        np.testing.assert_array_equal(_radix_sorted(case), np.sort(case))
    np.testing.assert_array_equal(_radix_sorted(np.full(9, base)), np.full(9, base))  # no pass at all


def _stable_order_from(keys, low):
    """keys in the stable order of their bits from ``low`` up, signed: the
    keys' top bit flipped, shifted, as unsigned integers."""
    u = (keys.view(np.uint64) ^ np.uint64(1 << 63)) >> np.uint64(low) if low < 64 else np.zeros(keys.shape, np.uint64)
    return keys[np.argsort(u, kind="stable")]


@given(arrays(np.int64, st.integers(0, 300), elements=st.integers(-(2**63), 2**63 - 1)), st.integers(0, 64))
def test_radix_sort_from_bit_low_is_stable(keys, low):
    """From bit ``low`` up, the sort is stable: keys that agree in those
    bits keep their order (the OWL keys rely on it: their index bits below
    ``low`` are in order already), for every ``low`` (64: no bits, nothing
    moves)."""
    np.testing.assert_array_equal(_radix_sorted(keys, low), _stable_order_from(keys, low))


@pytest.mark.parametrize("low", [0, 21])
@pytest.mark.parametrize("span_bits", [1, 7, 10, 11, 19, 20, 21, 28, 37, 40, 41, 43, 50, 61, 63, 64])
def test_radix_sort_whatever_the_span(span_bits, low):
    """The digits follow the span of the keys' parts from bit low (the
    largest minus the least): one pass of up to 10 bits, then more as
    evenly as they can be, up to 64 bits of span (7 digits of 10 bits);
    a base below the span's top makes the parts cross carries, so that
    the fixed 8-bit digits of a base-aligned sort would all vary; spans
    of the whole signed range cross its sign."""
    rng = np.random.default_rng(span_bits * 7 + low)
    n = 3000
    width = min(span_bits, 64 - low)
    base = int(rng.integers(-(2**62), 2**62)) >> low << low
    offsets = rng.integers(0, 2**64, n, dtype=np.uint64) >> np.uint64(64 - width)  # (width bits; wraps past 2^64)
    keys = (np.uint64(base & (2**64 - 1)) + (offsets << np.uint64(low))).view(np.int64)
    keys = keys | rng.integers(0, 2**low, n, dtype=np.int64) if low else keys
    keys[5::11] = keys[4::11][: keys[5::11].size]  # duplicates
    for case in (keys, np.sort(keys), np.sort(keys)[::-1].copy()):
        np.testing.assert_array_equal(_radix_sorted(case, low), _stable_order_from(case, low))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n", [3000, N])
@pytest.mark.parametrize("kind", ["gaussian", "cancelling", "near_ties", "ties"])
def test_owl_is_the_same_whichever_sorts_the_keys(kind, n, dtype, monkeypatch):
    """NumPy's sort and the radix sort give the OWL kernel the same keys in
    the same order (they are distinct), so the same output bit for bit:
    serial and parallel, below and past the split sort's threshold."""
    rng = np.random.default_rng(sum(map(ord, kind)) + n)
    v, w = _case(kind, dtype, rng)
    v, w = v[:n], w[:n]
    got = {}
    for sort in ("numpy", "radix"):
        monkeypatch.setattr(NB, "KEY_SORT", sort)
        got[sort] = [NB.owl(v, w, parallel=par) for par in (True, False)]
    for a, b in zip(got["numpy"], got["radix"]):
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


def test_key_sort_setting(monkeypatch):
    """"auto" takes the radix sort exactly where NumPy's sort is slow; a
    setting other than "auto", "numpy" or "radix" is refused by name."""
    for slow in (False, True):
        monkeypatch.setattr(NB, "_NUMPY_SORT_SLOW", slow)
        assert (NB._key_sort() is NB._radix_sort_keys) is slow
    monkeypatch.setattr(NB, "KEY_SORT", "quick")
    with pytest.raises(ValueError, match="KEY_SORT"):
        NB.owl(np.ones(3000), np.ones(3000))


@given(arrays(np.int64, st.integers(0, 300), elements=st.integers(-(2**43), 2**43)), st.integers(0, 3))
def test_radix_sort_from_a_bit_is_stable(high, low_digit):
    """Sorted by the bits from ``low`` up only, keys that agree there keep
    their order: with their low bits increasing along the array (an index,
    as in the OWL keys) the result is np.sort's; ``low`` at a byte's
    boundary or inside one."""
    low = [9, 13, 16, 21][low_digit]  # (2^low > 300 keys: the index fits below low)
    keys = (high << low) | np.arange(high.size, dtype=np.int64)
    np.testing.assert_array_equal(_radix_sorted(keys, low), np.sort(keys))
    shuffled = keys[::-1].copy()  # low bits decreasing: keys that agree above low come out reversed
    got = _radix_sorted(shuffled, low)
    np.testing.assert_array_equal(got >> low, np.sort(keys) >> low)
    np.testing.assert_array_equal(np.sort(got), np.sort(keys))


_MAGNITUDES = {
    np.float64: [0.0, 5e-324, 2.2250738585072014e-308, 1e-300, 0.5, 1.0, 1.0 + 2**-52, 3.0, 1e300, np.inf, np.nan],
    np.float32: [0.0, 1e-45, 1.1754944e-38, 1e-30, 0.5, 1.0, 1.0 + 2**-23, 3.0, 1e38, np.inf, np.nan],
    np.float16: [0.0, 6e-8, 6.1e-5, 1e-3, 0.5, 1.0, 1.0 + 2**-10, 3.0, 6e4, np.inf, np.nan],
}


@pytest.mark.parametrize("sort", ["numpy", "radix"])
@given(
    st.sampled_from([np.float64, np.float32, np.float16]),
    st.sampled_from([0, 1, 7, 4095, 4096, 5000, 20000]),
    st.integers(0, 2**32 - 1),
)
def test_sorted_magnitudes_are_numpys_sort_reversed(sort, dtype, n, seed):
    """numba_cpu.sort_magnitudes_desc (the sort of OWL.value and of the OWL
    certificate's dual norm) is np.sort(a)[::-1] bit for bit whichever sorts
    (the radix sort of the bits from 2^12 entries, NumPy's below, where
    KEY_SORT says so, and for float16): ties, zeros, subnormals, inf, NaN
    first, random magnitudes over the whole range (one NaN value: np.sort
    does not order NaN payloads)."""
    rng = np.random.default_rng(seed)
    special = np.array(_MAGNITUDES[dtype], dtype=dtype)
    lo, hi = {np.float64: (-1000, 120), np.float32: (-140, 120), np.float16: (-24, 15)}[dtype]
    wide = np.minimum(np.abs(rng.standard_normal(n) * 2.0 ** rng.integers(lo, hi, n)), np.finfo(dtype).max)
    a = np.where(rng.random(n) < 0.3, rng.choice(special, n), wide.astype(dtype)).astype(dtype)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(NB, "KEY_SORT", sort)
        got = NB.sort_magnitudes_desc(a)
    want = np.sort(a)[::-1]
    assert got.dtype == a.dtype and got.shape == a.shape
    np.testing.assert_array_equal(np.ascontiguousarray(got).view(np.uint8), np.ascontiguousarray(want).view(np.uint8))


def test_owl_value_and_dual_norm_are_the_same_whichever_sorts(monkeypatch):
    """OWL.value and OWL's dual norm (which the certificates and the
    solvers' duality gaps take) give the same numbers with the radix sort
    as with NumPy's, on 30000 entries (past the radix sort's 2^12)."""
    rng = np.random.default_rng(3)
    v = rng.standard_normal(30000) * 10.0 ** rng.integers(-5, 5, 30000)
    w = np.sort(rng.random(30000))[::-1].copy()
    pen = proxlib.OWL(w)
    got = {}
    for sort in ("numpy", "radix"):
        monkeypatch.setattr(NB, "KEY_SORT", sort)
        got[sort] = (pen.value(v), pen.dual_norm(v))
    assert got["numpy"] == got["radix"]
    with proxlib.use_backend("numpy"):  # (the reference backend: NumPy's sort, the same numbers)
        assert (pen.value(v), pen.dual_norm(v)) == got["numpy"]
