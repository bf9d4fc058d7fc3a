"""Numba CPU backend: the kernels of ``KERNELS``, compiled, parallel over rows.

Same contract as :mod:`proxlib.backends.numpy_ref` (new output array of the
input's dtype and shape, inputs never written, thresholds already times
``step``), and the same mathematics; the row and elementwise kernels also
take ``out=``, an array of the input's shape and dtype that receives the
result and may be the input itself (in place: how a training step writes
into a parameter's memory).  Rows may be C- or F-contiguous: F-contiguous
rows (the ``"channel"`` and ``"shape"`` rows of a Linear weight) are the
columns of a C-contiguous matrix and are processed column-wise, in memory
order (below); the algorithms below are chosen so that
the time is close to one pass over memory.  ``error_model="numpy"`` (no
Python division checks); no ``fastmath`` except ``reassoc`` on pure sums of
non-negative terms (``_rjit``): reassociation lets LLVM vectorise them and
keeps their error bound (any summation order errs by at most (m - 1) eps
times the sum), every other flag (no NaNs, contraction, approximate
division, ...) stays off.

Every kernel takes ``parallel=True``; ``parallel=False`` runs only serial
compiled code and never starts numba's thread pool (for a thread that must
not spawn one, e.g. inside a training loop's worker).  Both give the same
result, bit for bit.  Small inputs (< 2^15 entries) always run serially.
Nothing here reads an environment variable (numba's own ones apply to
numba).

Caching: compiled with ``cache=True`` (a new process loads the machine code)
when numba can write a cache: a ``__pycache__`` beside this file, or
NUMBA_CACHE_DIR, or the user's cache directory.  A read-only install run by
a user without any of those (a container's non-root user with a read-only
home) gets one RuntimeWarning at import, and the kernels are compiled in each
process on first use instead (``cache=True`` would raise "no locator
available" at import).

Precision.  float32 data stays float32 in memory (scratch and output); every
sum, threshold and root is computed in float64 and each output entry is
rounded once to float32, as the reference does (weighted l1's |v| - w is one
operation in the data's precision, as in the reference: correctly rounded).

Overflow and underflow: every kernel is correct over the whole finite range
of its dtype (inputs and thresholds from the smallest subnormal to the largest
float; thresholds may be +inf where step * lam overflowed: the affected rows
or entries become 0, and rows whose threshold is 0 stay unchanged).  Scaling
is by powers of two (exact):

* row norms (group lasso, GrOWL) are (q, s), norm = q s, s = 1 when the
  plain sum of squares lies in [2^-600, inf) (one pass), else the row is
  summed again at max|row|/s in [1, 2); a finite row whose norm exceeds the
  largest float (4 x 1e308) is therefore not reported as NaN/Inf, and GrOWL
  takes the norms at the smallest scale that makes them all finite;
* the exclusive operators use a row unscaled when its sum lies in
  [m 2^-500, 2^500] (float32 always), else scaled to max|row|/s in [1, 2);
  b >= 2^54 has a closed form (only the entries equal to max|w| survive, as
  max|w|/(1 + b k));
* OWL sums at a scale 2^-k only when n^2 max(|v|, w) >= 2^1021; its exact
  stages then keep subnormal terms unscaled;
* weighted l2^2 divides by (1/2 + w) when 1 + 2w overflows; lp forms its
  threshold without overflowing 2 lam.

Algorithms (m = row length, G = rows, n = vector length):

* ``group_lasso``: per row (prange), the norm (one read from memory) and the
  scaled copy (the second read hits the cache).  O(G m), no scratch.
  Columns: one pass of sums of squares into G float64 accumulators (a
  column whose plain sum leaves [2^-600, inf) is summed again scaled, on its
  own), then one scaling pass.
* ``growl``: row norms (prange, one pass), the OWL prox of the G norms, then
  the rescaled rows (second pass).  W is necessarily read twice: every row's
  factor depends on all norms.  O(G m + G log G), O(G) scratch.  Columns:
  as group lasso.  Both also take a convolution weight's "channel" rows,
  W.reshape(O, C, K)[:, c, :] (``group_lasso_channels``, ``growl_channels``:
  serial passes in memory order on that array, the sums of squares in the
  row kernels' order, so the results are theirs bit for bit).
  The public ``prox_group_lasso`` (one lam, no group weights or labels) and
  ``prox_growl`` on NumPy rows (and the penalty objects' ``prox``) check the
  weights and form the thresholds in compiled code (``group_lasso_checked``,
  ``growl_checked``), then run the same kernels: for G <= 2048 rows
  serially the whole call is one compiled call; anything unusual goes to
  the general path, which reports it.  The exclusive operators' public
  calls with scalar parameters take the same kind of lane
  (``exclusive_lasso_checked``, ``group_exclusive_checked``: the
  thresholds formed in Python by the general path's rule, then the serial
  row kernel directly, or the operator's route for a parallel-sized W).
* ``exclusive_lasso``: per row (prange over chunks of rows, one float64
  scratch row per chunk), no sorting: one pass summing |w| (vectorised), then
  Newton's method from the left on the concave piecewise-linear
  phi(t) = t - b F(t), F(t) = sum (y - t)_+ (Michelot's tau = b S/(1 + b k)
  on the current candidates; it never passes the root and stops on its last
  piece: about 5 passes on Gaussian rows with b = 1/m, 10 for one-entry
  supports), each pass vectorised over the candidates, which are compacted
  into the scratch row before a pass once few remain and several passes look
  set to follow (``_worth_compacting``).  The support is then
  checked with the reference's cancellation-free tests (Y_k > b F_k,
  F_k = sum over the support of (y - Y_k); float64 rows take F_k from the
  search's last pass at t, F(t) - k (Y_k - t), where that cancels at most
  half, instead of a pass of its own) and the output row written once
  as ((|w| - Y_k) + e) s, e = (Y_k - b F_k)/(1 + b k).  Expected O(m) per
  row: one read from memory, a few passes in cache, one write.  Before the
  search: the first pass also gives Y = min{|w| > 0} (the minimum of the
  values' bits: an integer reduction, vectorised), and if phi(Y) > 0 the
  support is every nonzero entry, so one pass of its statistics and the
  output pass finish the row (a training step's small thresholds: three
  passes in all).  Columns (F-contiguous rows: a Linear weight's "shape"
  rows): passes in memory order over all columns at once.  The first gives
  each column's sum, nonzero count and least nonzero magnitude, hence a
  lower bound tau_0 = b (S - a sqrt(n))/(1 + b n) <= tau (_tau_below); a
  column whose least magnitude is not above it (in training: entries the
  prox zeroed and the gradient step revived as tiny magnitudes) takes the
  least magnitude above tau_0 as its candidate Y, and phi(Y) > 0 on its
  support sums proves the support {y >= Y} (else a higher bound from the
  entries above tau_0, up to four rounds: _exclusive_col_search).  float32
  exclusive lasso: the support sums come exactly from the same pass's sums
  (F = S - k Y, _support_sums_from_pass1), so a training step takes three
  passes (first, candidates, output), as the fast path does
  (group+exclusive: F and k come so too, and its second pass sums D2
  alone: _support_sums).  With hints
  (``hint=``: a guess of each column's threshold kept between calls, e.g.
  by a training step, torch_dev's in-place runner) the first pass sums the
  magnitudes above the hint instead; a hint that proves phi <= 0 there
  gives the candidate at once: two passes (first, output) where the
  support sums come from the first pass's (the float32 exclusive lasso's
  exactly; float64's from its sums shifted by the hints, float32
  group+exclusive's from its plain sums and squares, where they do not
  cancel: _shifted_support_sums, on columns of 64 entries or more), else
  three; one that does not is dropped
  (another first pass) and costs what no hint costs.  Columns still
  undecided (or scaled, or with a special b) are gathered into rows and
  solved as above; when they are more than a quarter of the columns, the
  whole matrix is copied into rows and solved row-wise.
* ``group_exclusive``: the same, with phi(t) = t - b F(t)(1 - a/sqrt(Q(t)))_+,
  Q(t) = sum (y - t)_+^2, located by a bracket narrowed by Newton, secant or
  bisection points until no entry lies inside it; the support's sums from
  the last pass's at the lower point (or the first pass's at 0), shifted,
  where they cancel little (_gx_support_sums), else from their own pass;
  then the reference's safeguarded Newton iteration for the factor c on the
  fixed support (to the last bit, from one fixed-point step off c = 1),
  for a block of rows at once (_group_exclusive_rows), and one output pass
  a row; the same first check (phi(Y) > 0: no search) and column-wise
  passes (the candidate search included; the support sums from the first
  pass's where the hints decide the columns, else from their own pass).
* ``owl``: the zero pattern is EXACT, the values faithful:
  (1) one sort of packed 64-bit keys, magnitude bits << (ib + 1)
  | index << 1 | sign (ib = index bits; a non-negative float's bit pattern is
  monotone in its value; sorted as signed integers, float64's top bit
  flipped: AVX2 compares signed 64-bit lanes natively), gives the sorted
  magnitudes and the permutation at once.  The sort is NumPy's SIMD sort,
  except on AMD Zen 4, where NumPy's AVX-512 sort runs 5x slower than its
  AVX2 code and an LSD radix sort is used instead (``_radix_sort``,
  ``KEY_SORT``; the whole kernel then takes 0.35-0.62x its time with
  NumPy's sort at 1e5-1e7 entries, the same results).  float32 keys hold
  all 31 magnitude bits; float64 keys drop the ib lowest, and the rare
  runs of equal truncated keys are put in order of the full magnitudes,
  read back from v (insertion sort; numba's argsort for long runs; float64
  reads them all back from v in the sorted order, a random gather that
  asks for each entry 64 positions ahead).  Parallel calls on
  >= 2^18 entries partition the keys around a sampled median and sort the
  two parts at once, no merge: the radix sort in one parallel region whose
  two tasks each count, pack and sort their part (_owl_radix_sorted_parts),
  NumPy's sort in two threads (it releases the GIL) after one serial pass
  forms and partitions the keys;
  (2) the support: z_i = |v|_(i) - w_i is never rounded (TwoSum), and the
  support is the k* largest magnitudes with k* the first index maximising the
  exact prefix sums of z (isotonic regression's min-max formula).  Chunk sums
  (vectorised, prange) with a rigorous error bound discard the chunks that
  cannot hold the maximum; compensated prefix sums over the rest (a chunk or
  two) leave a window of candidates that exact expansion sums (Shewchuk)
  decide.  O(n) vectorised + O(chunk) + O(window);
  (3) pool-adjacent-violators over the support only, on the rounded z, each
  pooled block's mean clamped between the two means it pools (so a run of
  tied z keeps its exact value and never pools with a neighbour an ulp
  away) (O(k); on >= 2^16 entries the two halves apart, in parallel when
  allowed, then their blocks pooled as units: the same blocks either way);
  (4) each pooled block's value recomputed as the faithfully rounded mean
  of the exact z (compensated sum and an fma remainder; a single entry is
  its z rounded once, which the PAVA's stack already holds: runs of single
  entries are passed over 16 blocks at a time, and the pooled blocks'
  entries prefetched), noting whether any two adjacent values decrease or
  split a run of tied magnitudes; only then (rounded z can under-pool near ties) a
  second pool-adjacent-violators pass over the blocks on these values (run
  always, it cost 3.6-4.4 ms more at n = 1e6; the values pass with its
  check now takes 0.2 ms in float64, 1 ms in float32, whose ties pool
  more blocks); and where rounding
  left the lowest blocks <= 0 their exact mean (positive) from expansions.
  O(k) (prange);
  (5) the output by one scatter over the sorted positions (prange): entry
  i gets its block's value with its own sign (a product by +-1: no branch
  on the sign), +-0 off the support, each target asked for 64 positions
  ahead.  Tied magnitudes get equal values (_owl_monotone pools them).
  Memory: the keys (one int64 per entry), the sorted magnitudes in the output
  array until the scatter overwrites them, the index and the block starts
  (int32) packed into the keys' memory once sorted, the block means (k
  float64): 2 input-sized scratch arrays for float64, up to 4 for float32
  (keys and block means are 8 bytes an entry).  The radix sort's scratch
  is the output array for float64 (free until the sorted magnitudes are
  unpacked into it) and one int64 per entry for float32 (2 input sizes,
  which then holds the block means): the peaks stay 2 and 4.
  Vectors of at most 2048 entries (GrOWL's row norms, a layer's vector) take
  one compiled call instead: argsort, the same steps (2)-(4) (the support's
  chunks of 64 entries, not 4096), a scatter.
  The public ``prox_owl`` / ``OWL.prox`` on a NumPy vector checks its
  arguments in one compiled pass (``owl_checked``: no Python layers, no
  float64 temporaries; for at most 2048 entries inside that one call;
  anything unusual goes to the general path, which reports it), and the
  kernels form each threshold step * w_i where they read it (``_weight``):
  no array of thresholds, so the public call too has the 2 (float64)
  scratch arrays above.
* ``weighted_l1``, ``weighted_l2sq``, ``lp``: elementwise, one map over the
  entries (``_map_seq``, or ``_map_par``: prange) of an entry function.  lp
  with p = 1/2 or 2/3 solves the stationarity as a polynomial in
  u = (x/|v|)^(1 - p), one parameter for every scale, by Newton's method
  (``_lp_root``: no powers, acos or cos; a branch-free pass over blocks of
  entries that vectorises, ``_lp_half_lane``, ``_lp_two_thirds_lane``, the
  cube root by Newton's steps too, ``_cbrt_in_range``), within a few ulps
  of the reference, which takes closed forms of the roots; other p the
  reference's monotone Newton iteration, per entry.
* ``weighted_l1_metric``, ``weighted_l2sq_metric`` (the prox in a diagonal
  metric d; ``lp_metric`` below): the float64 operations of :mod:`._metric_kernels` entry by
  entry, one pass (the same maps), the same bits.
* ``group_lasso_metric``: that module's row operator row by row (prange over
  chunks of rows): each row read once into float64 scratch rows, its scales,
  norms and bracket, then the array code's safeguarded Newton search (4-5
  steps a row in an Adam training step), each step one vectorised pass in
  cache; rows that are columns go through scratch a tile at a time.  Its row
  sums add in another order than NumPy's or torch's, so it agrees with the
  array code to a few units in the last place.
* ``exclusive_lasso_metric``: that module's exclusive lasso row by row, the
  same way: the exact products z = d|w| (Dekker), sorted by packed keys
  (z's bits and the index) with the radix sort, an insertion pass putting
  the rare pairs that agree above the index bits in the array code's
  lexicographic order, its sequential cumulative sums and prefix support:
  the NumPy array code's bits.  O(m) a row but for those pairs.
* ``group_exclusive_metric``: both together, the same row kernel (the group
  lasso is its b = 0 case, the exclusive lasso its a = 0 case): the row
  sorted once, then at each step of the array code's search over
  s = ||x||_2 the exclusive equation with weights d + a/s (cumulative sums
  and prefix, as above) and the step's sums.  To a few units in the last
  place of the array code, as the group lasso.
* ``lp_metric``: each entry's lp prox at lam / d_i (at its own scale where
  that is out of range), the Euclidean kernel's solve per entry (for
  p = 1/2 and 2/3 its vectorised blocks), one pass (prange): the array code's
  operations to an ulp or so of its powers (libm's here, NumPy's or
  torch's there), for p = 1/2 and 2/3 ``_lp_root``'s few ulps.
"""

from __future__ import annotations

import math
import threading
import warnings

import numba as nb
import numpy as np
from llvmlite import ir as llvm_ir
from numba import get_num_threads, prange
from numba.core import cgutils, types
from numba.extending import intrinsic, overload

from .._range import _FMAX, hard_threshold, thresholds_in_range
from . import KERNELS
from . import NonFiniteInput

__all__ = list(KERNELS)  # the same kernel names in every backend

NAME = "numba"


def _cache_probe():  # pragma: no cover - decorated, never called
    return 0


def _caching_available() -> bool:
    """Whether numba can cache the compiled kernels of this file.

    numba looks for a writable ``__pycache__`` beside this file, then
    ``NUMBA_CACHE_DIR``, then the user's cache directory; a read-only install
    run by a user without a writable home has none, and ``cache=True`` then
    raises at decoration time ("no locator available").  Without one, the
    kernels are compiled in each process on first use (one warning here).
    """
    try:
        nb.njit(cache=True)(_cache_probe)
    except Exception as exc:  # RuntimeError from numba's cache locator, or an OSError
        warnings.warn(
            f"proxlib: numba cannot cache compiled kernels here ({exc}); they are "
            "compiled in each process on first use instead",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


_OPTS = dict(cache=_caching_available(), nogil=True, error_model="numpy")
_jit = nb.njit(**_OPTS)
_pjit = nb.njit(parallel=True, **_OPTS)
# reductions that may be reassociated (so that LLVM vectorises them); no other
# fast-math flag: every rounding stays IEEE, only the order of a sum changes
_rjit = nb.njit(fastmath={"reassoc"}, **_OPTS)
# a pass's loop, inlined into its caller's Numba IR (the caller's fast-math
# flags then apply: a loop of an _rjit pass is called from an _rjit one)
_inline = nb.njit(inline="always", **_OPTS)
# The passes over a row read y = (|x| f1) f2, where f1, f2 are powers of two
# that scale the rare rows whose sums leave a safe range (1 otherwise).  Each
# such pass calls its loop twice, once with the literals 1.0 (the loop then
# loses its two products an entry, which LLVM folds: |x| 1 = |x| exactly;
# 25% of a pass at 784 x 300, measured) and once with the factors.

_MAX_ROOT_ITER = 200
_TINY_SUMSQ = 2.0**-600  # below this an unscaled sum of squares may have lost terms to underflow
_PAR_MIN = 1 << 15  # inputs with fewer entries run serially (a parallel launch costs ~10 us)


def _parallel(W):
    return W.size >= _PAR_MIN and W.shape[0] > 1


def _result(v, out):
    """``out`` (an array of v's shape and dtype; may be v itself), or a new one."""
    if out is None:
        return np.empty_like(v)
    if out.shape != v.shape or out.dtype != v.dtype:
        raise ValueError(f"out must have the input's shape {v.shape} and dtype {v.dtype}, got {out.shape} {out.dtype}")
    return out


# ------------------------------------------------------------------ row helpers


def _lanes_apply(x) -> bool:
    """Whether _lane_sums_of_squares takes x (a numba type): a 1-D
    C-contiguous, aligned float32 or float64 array."""
    return isinstance(x, types.Array) and x.ndim == 1 and x.layout == "C" and x.aligned and x.dtype in (types.float32, types.float64)


@intrinsic
def _lane_sums_of_squares(typingctx, x):
    """The eight lane sums of _sumsq over x[:m - m % 8] of a C-contiguous
    float32 or float64 vector x (lane l: x[l]^2 + x[l + 8]^2 + ..., in
    increasing index, in float64), as a tuple.  The loop is written in
    LLVM vector types (two <4 x double> accumulators: an 8-entry load,
    widened to float64 for float32, squared, added), because LLVM does not
    vectorise the scalar form: its eight accumulators are loop-carried
    chains that the SLP vectoriser does not start from.  No fast-math flag:
    each lane's additions stay in _sumsq's order (and no fused
    multiply-add), so the sums are the scalar loop's bit for bit, about 2x
    faster on rows in cache (the norms of 300 x 784 float32 rows: 99-117 ->
    45-57 us; one serial group lasso on them in place: 121 -> 71-97 us)."""
    if not _lanes_apply(x):
        return None
    sig = types.UniTuple(types.float64, 8)(x)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        i64, i32 = llvm_ir.IntType(64), llvm_ir.IntType(32)
        v4 = llvm_ir.VectorType(llvm_ir.DoubleType(), 4)
        zero = llvm_ir.Constant(v4, [0.0] * 4)
        blocks = builder.lshr(builder.extract_value(ary.shape, 0), llvm_ir.Constant(i64, 3))  # m // 8 (m >= 0)
        entry = builder.basic_block
        loop = builder.append_basic_block("lanes.loop")
        done = builder.append_basic_block("lanes.done")
        builder.cbranch(builder.icmp_unsigned(">", blocks, llvm_ir.Constant(i64, 0)), loop, done)
        builder.position_at_end(loop)
        i = builder.phi(i64)
        acc = (builder.phi(v4), builder.phi(v4))
        first = builder.gep(ary.data, [builder.shl(i, llvm_ir.Constant(i64, 3))])
        eight = builder.load(
            builder.bitcast(first, llvm_ir.VectorType(context.get_data_type(x.dtype), 8).as_pointer()),
            align=x.dtype.bitwidth // 8,
        )
        if x.dtype == types.float32:
            eight = builder.fpext(eight, llvm_ir.VectorType(llvm_ir.DoubleType(), 8))
        new = []
        for half, a in enumerate(acc):
            mask = llvm_ir.Constant(llvm_ir.VectorType(i32, 4), [4 * half + k for k in range(4)])
            v = builder.shuffle_vector(eight, eight, mask)
            new.append(builder.fadd(a, builder.fmul(v, v)))
        nxt = builder.add(i, llvm_ir.Constant(i64, 1))
        i.add_incoming(llvm_ir.Constant(i64, 0), entry)
        i.add_incoming(nxt, loop)
        for a, b in zip(acc, new):
            a.add_incoming(zero, entry)
            a.add_incoming(b, loop)
        builder.cbranch(builder.icmp_unsigned("<", nxt, blocks), loop, done)
        builder.position_at_end(done)
        sums = []
        for b in new:
            r = builder.phi(v4)
            r.add_incoming(zero, entry)
            r.add_incoming(b, loop)
            sums.append(r)
        lanes = [builder.extract_element(r, llvm_ir.Constant(i32, k)) for r in sums for k in range(4)]
        return context.make_tuple(builder, signature.return_type, lanes)

    return sig, codegen


def _eight_lanes(x):  # pragma: no cover - replaced by the overload below in compiled code
    raise NotImplementedError


@overload(_eight_lanes)
def _eight_lanes_overload(x):
    """_sumsq's eight lane sums over x[:m - m % 8]: in vector code for a
    C-contiguous x (_lane_sums_of_squares), else the scalar loop (strided
    rows: a matrix's column, a convolution's channel; unaligned data)."""
    if _lanes_apply(x):
        return lambda x: _lane_sums_of_squares(x)

    def scalar(x):
        m = x.shape[0]
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
        for j in range(0, m - m % 8, 8):
            a0 = np.float64(x[j])
            a1 = np.float64(x[j + 1])
            a2 = np.float64(x[j + 2])
            a3 = np.float64(x[j + 3])
            a4 = np.float64(x[j + 4])
            a5 = np.float64(x[j + 5])
            a6 = np.float64(x[j + 6])
            a7 = np.float64(x[j + 7])
            s0 += a0 * a0
            s1 += a1 * a1
            s2 += a2 * a2
            s3 += a3 * a3
            s4 += a4 * a4
            s5 += a5 * a5
            s6 += a6 * a6
            s7 += a7 * a7
        return s0, s1, s2, s3, s4, s5, s6, s7

    return scalar


@_jit
def _sumsq(x):
    """Sum of x_j^2 in float64, unscaled: eight partial sums (lane l takes
    x_l^2, x_{l+8}^2, ... below the last multiple of 8, in increasing j; lane
    0 then the rest), combined as ((s0 + s1) + (s2 + s3)) + ((s4 + s5) +
    (s6 + s7)).  A fixed order (_mid_sumsq reproduces it bit for bit) in
    vector code (_lane_sums_of_squares)."""
    m = x.shape[0]
    s0, s1, s2, s3, s4, s5, s6, s7 = _eight_lanes(x)
    for j in range(m - m % 8, m):
        a0 = np.float64(x[j])
        s0 += a0 * a0
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@_jit
def _absmax(x):
    """max_j |x_j| as float64 (0 for an empty row) of a row without NaN:
    the largest of the magnitudes' bits in x's own width (_magnitude_bits,
    ordered as the magnitudes; an integer maximum, which LLVM vectorises,
    where a float one with IEEE rules stays scalar: 0.5x the time on 784
    rows of 300 float64)."""
    if x.shape[0] == 0:
        return 0.0
    top = _magnitude_bits(x[0])
    for j in range(x.shape[0]):
        top = max(top, _magnitude_bits(x[j]))
    return _magnitude_of_bits(top)


@_jit
def _scale_factors(amax):
    """(s, f1, f2): s = 2^(e-1) with amax/s in [1, 2) (1 for amax == 0), and
    powers of two with (a * f1) * f2 == a / s exactly (f1 != 1 only for
    amax < 2^-1001, where 1/s would overflow, or nearly: subnormal amax and,
    as a margin, the least normal binades)."""
    if amax == 0.0:
        return 1.0, 1.0, 1.0
    _, e = math.frexp(amax)
    s = math.ldexp(1.0, e - 1)
    if e < -1000:
        return s, math.ldexp(1.0, 600), math.ldexp(1.0, 1 - e - 600)
    return s, 1.0, math.ldexp(1.0, 1 - e)


@_jit
def _sumsq_scaled(x, f1, f2):
    m = x.shape[0]
    s0 = s1 = s2 = s3 = 0.0
    j = 0
    while j + 4 <= m:
        a0 = (abs(np.float64(x[j])) * f1) * f2
        a1 = (abs(np.float64(x[j + 1])) * f1) * f2
        a2 = (abs(np.float64(x[j + 2])) * f1) * f2
        a3 = (abs(np.float64(x[j + 3])) * f1) * f2
        s0 += a0 * a0
        s1 += a1 * a1
        s2 += a2 * a2
        s3 += a3 * a3
        j += 4
    while j < m:
        a0 = (abs(np.float64(x[j])) * f1) * f2
        s0 += a0 * a0
        j += 1
    return (s0 + s1) + (s2 + s3)


@_jit
def _sum_scaled(x, f1, f2):
    m = x.shape[0]
    s0 = s1 = 0.0
    j = 0
    while j + 2 <= m:
        s0 += (abs(np.float64(x[j])) * f1) * f2
        s1 += (abs(np.float64(x[j + 1])) * f1) * f2
        j += 2
    if j < m:
        s0 += (abs(np.float64(x[j])) * f1) * f2
    return s0 + s1


@_jit
def _row_norm(x):
    """The l2 norm of a row as (q, s): norm = q s with s a power of two, without
    overflow or underflow (float64).

    s = 1 when the plain sum of squares is in [2^-600, inf) (one pass);
    otherwise the row is summed again scaled by s with max|x|/s in [1, 2), so
    q is in [1, 2 sqrt(m)).  q is finite iff every entry is (a finite row whose
    norm exceeds the largest float, e.g. four entries of 1e308, has a finite
    q); a NaN entry gives q = NaN (max() would skip it)."""
    q = _sumsq(x)
    if q >= _TINY_SUMSQ and q < np.inf:
        return math.sqrt(q), 1.0
    if q != q:
        return q, 1.0
    amax = _absmax(x)
    if amax == 0.0 or not amax < np.inf:
        return amax, 1.0
    s, f1, f2 = _scale_factors(amax)
    return math.sqrt(_sumsq_scaled(x, f1, f2)), s


@_jit
def _scale_row(x, fac, out):
    """out = x fac; in place (out is x) through one array, which LLVM
    vectorises (see _map_seq)."""
    if x.ctypes.data == out.ctypes.data:
        for j in range(out.shape[0]):
            out[j] = out[j] * fac
    else:
        for j in range(x.shape[0]):
            out[j] = x[j] * fac


# -- groups that are the columns of a C-contiguous matrix (a rows view W that
# is F-contiguous: the "channel" and "shape" groupings of a Linear weight):
# statistics and maps run over the memory in order, one accumulator per column,
# instead of a strided pass per group


def _as_columns(W, out) -> bool:
    """Whether the rows of W (and of out) are the columns of C-contiguous
    matrices W.T, out.T (F-contiguous, more than one group and entry)."""
    return (
        W.ndim == 2 and W.shape[0] > 1 and W.shape[1] > 1
        and W.flags.f_contiguous and out.flags.f_contiguous
    )


# The column passes (rows of a parameter that are its columns) read four
# rows of A per update of the per-column accumulators: with one row per
# update, loading and storing the accumulators (float64, in L1) costs more
# than reading A (measured at 300x784: the first exclusive pass 2-4x, the
# others 1.1-1.7x faster blocked).  Sums of non-negative terms in any order
# keep the error bound (m - 1) eps of the sequential sum, and no partial sum
# exceeds the total (no new overflow).


@_rjit
def _col_sumsq(A, ss):
    """ss_g = sum_i A[i, g]^2 in float64, unscaled (vectorised over g, four
    rows of A per update, each as (a0^2 + a1^2) + (a2^2 + a3^2):
    _sq_plus_sq)."""
    P, G = A.shape
    exact = _is_float32(A[0, 0])
    for g in range(G):
        ss[g] = 0.0
    i = 0
    while i + 4 <= P:
        r0, r1, r2, r3 = A[i], A[i + 1], A[i + 2], A[i + 3]
        for g in range(G):
            a0, a1 = np.float64(r0[g]), np.float64(r1[g])
            a2, a3 = np.float64(r2[g]), np.float64(r3[g])
            ss[g] += _sq_plus_sq(a0, a1, exact) + _sq_plus_sq(a2, a3, exact)
        i += 4
    for i in range(i, P):
        row = A[i]
        for g in range(G):
            v = np.float64(row[g])
            ss[g] += v * v


@_inline
def _sq_plus_sq(a, b, exact):
    """a^2 + b^2 in float64, rounded once after the squares are rounded.
    ``exact`` (a compile-time constant: float32 data widened) says that the
    squares are exact in float64; then it is fma(a, a, b^2), the same bits
    in one operation fewer (the column passes that sum squares in memory
    order: 0.80x the time of _col_sumsq at 300 x 784 float32, measured on
    AMD Zen 4, whose FMA units are apart from its adders)."""
    return _fma(a, a, b * b) if exact else a * a + b * b


@_jit
def _col_norms(A, q, s):
    """(q_g, s_g) of _row_norm for every column g of A: the plain sums of
    squares in one pass; a column whose sum leaves [2^-600, inf) is summed
    again, scaled, on its own (as _row_norm does), unless it is zero
    (_plain_norms)."""
    _col_sumsq(A, q)
    if _plain_norms(q, s, A.itemsize):
        l1 = np.zeros(A.shape[1], dtype=np.float64)
        _col_abssum(A, l1)
        _zero_norms(q, s, l1)
    for g in range(A.shape[1]):
        if s[g] == 0.0:
            q[g], s[g] = _row_norm(A[:, g])


@_jit
def _plain_norms(q, s, itemsize):
    """From the plain sums of squares q of rows read across memory (the
    columns of a matrix, a convolution's channels): the norms q_g =
    sqrt(q_g), s_g = 1 where the sum is in [2^-600, inf); the others are
    marked s_g = 0 for _row_norm's second look, except zero rows, given
    (0, 1) as _row_norm gives them.  Zero rows are the common case in
    training (the group lasso zeroes them, and inputs that are always 0, an
    image's border, keep them so), and a second look reads the row across
    all of memory (300 cache lines for a 300-row column): a float32 row
    whose sum is 0 is zero (its squares cannot underflow in float64).
    Returns whether the caller should find the zero rows among the marked
    ones by one pass in memory order (float64, more than a few marked:
    :func:`_zero_norms`)."""
    again = 0
    for g in range(q.shape[0]):
        if q[g] >= _TINY_SUMSQ and q[g] < np.inf:
            q[g] = math.sqrt(q[g])
            s[g] = 1.0
        elif q[g] == 0.0 and itemsize == 4:
            s[g] = 1.0
        else:
            s[g] = 0.0
            again += 1
    return again > 4


@_jit
def _zero_norms(q, s, l1):
    """(0, 1) for the marked rows (s_g = 0) whose l1 norm l1_g is 0."""
    for g in range(q.shape[0]):
        if s[g] == 0.0 and q[g] == 0.0 and l1[g] == 0.0:
            s[g] = 1.0


@_rjit
def _col_abssum(A, acc):
    """acc_g += sum_i |A[i, g]| in memory order: 0 exactly for the zero
    columns (|x| >= 2^-1074 does not underflow; a sum, unlike a max,
    vectorises)."""
    for i in range(A.shape[0]):
        row = A[i]
        for g in range(A.shape[1]):
            acc[g] += abs(np.float64(row[g]))


@_jit
def _scale_cols(A, fac, out):
    """out[i, g] = A[i, g] fac_g (in place when out is A; four rows per
    read of fac)."""
    P, G = A.shape
    if A.ctypes.data == out.ctypes.data:
        i = 0
        while i + 4 <= P:
            r0, r1, r2, r3 = out[i], out[i + 1], out[i + 2], out[i + 3]
            for g in range(G):
                f = fac[g]
                r0[g] = r0[g] * f
                r1[g] = r1[g] * f
                r2[g] = r2[g] * f
                r3[g] = r3[g] * f
            i += 4
        for i in range(i, P):
            row = out[i]
            for g in range(G):
                row[g] = row[g] * fac[g]
    else:
        for i in range(P):
            row = A[i]
            orow = out[i]
            for g in range(G):
                orow[g] = row[g] * fac[g]


# The "channel" rows of a convolution weight (O, C, ...) C-contiguous: row c
# is W[:, c] -- O blocks of K contiguous entries, C K apart.  Viewed as
# A3 = W.reshape(O, C, K), the passes below run in memory order over all
# rows at once (as the column passes do for a Linear weight), on the
# parameter's own memory.


@_jit
def _mid_sumsq(A3, q):
    """q_c = _sumsq(row c) for every row c = A3[:, c, :] (entry j = o K + k),
    bit for bit, in one pass in memory order: _sumsq's eight partial sums
    (lane j mod 8 below the last multiple of 8, lane 0 after it), each fed
    in increasing j as there, and combined as there.  (Scalar: the lanes of
    a block of K change with o; the same results as the row kernels matter
    more than SIMD here.)"""
    O, C, K = A3.shape
    m = O * K
    m8 = m - m % 8
    acc = np.zeros((C, 8), dtype=np.float64)
    for o in range(O):
        j0 = o * K
        for c in range(C):
            x = A3[o, c]
            lanes = acc[c]
            for k in range(K):
                a = np.float64(x[k])
                j = j0 + k
                lanes[(j & 7) if j < m8 else 0] += a * a
    for c in range(C):
        a = acc[c]
        q[c] = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))


@_jit
def _mid_norms(A3, q, s):
    """(q_c, s_c) of _row_norm for every row c = A3[:, c, :], bit for bit:
    the plain sums of squares in one pass in memory order (_mid_sumsq); a
    row whose sum leaves [2^-600, inf) is summed again, scaled, from a copy
    of it, unless it is zero (as _col_norms does)."""
    _mid_sumsq(A3, q)
    if _plain_norms(q, s, A3.itemsize):
        O, C, K = A3.shape
        l1 = np.zeros(C, dtype=np.float64)
        for o in range(O):
            for c in range(C):
                x = A3[o, c]
                for k in range(K):
                    l1[c] += abs(np.float64(x[k]))
        _zero_norms(q, s, l1)
    for c in range(A3.shape[1]):
        if s[c] == 0.0:
            q[c], s[c] = _row_norm(A3[:, c, :].copy().reshape(-1))


@_jit
def _scale_mid(A3, fac, out3):
    """out3[o, c, k] = A3[o, c, k] fac_c (in place when out3 is A3: then one
    array per loop, see _map_seq)."""
    O, C, K = A3.shape
    same = A3.ctypes.data == out3.ctypes.data
    for o in range(O):
        for c in range(C):
            f = fac[c]
            y = out3[o, c]
            if same:
                for k in range(K):
                    y[k] = y[k] * f
            else:
                x = A3[o, c]
                for k in range(K):
                    y[k] = x[k] * f


# ------------------------------------------------------------------ group lasso


@_jit
def _group_lasso_factor(q, s, ar):
    """(1 - a/||x||)_+ with ||x|| = q s: compared and divided as a/s against q
    (a/s may overflow to inf: then the row is 0, as it should; it may underflow:
    then the factor is 1 - a/||x|| rounded, as it should).  A norm that is not
    finite (an unchecked row holding NaN or Inf) gives 1, the row as it is,
    as in the reference's stages (_stages.group_lasso_factor)."""
    a_s = ar / s
    if q > a_s:
        return 1.0 - a_s / q  # (1 for an infinite norm)
    return 1.0 if q != q else 0.0


@_jit
def _group_lasso_row(x, ar, o):
    """x (1 - a/||x||)_+ (_group_lasso_factor)."""
    q, s = _row_norm(x)
    _scale_row(x, _group_lasso_factor(q, s, ar), o)
    return q


@_jit
def _group_lasso_cols(A, a, out, nrm, check_finite):
    """_group_lasso_row on every column of A (out may be A); with
    check_finite and a non-finite norm, nothing is written and False is
    returned (the caller raises: :func:`_check_norms`)."""
    s = np.empty(A.shape[1], dtype=np.float64)
    _col_norms(A, nrm, s)
    ok = _norms_finite(nrm, check_finite)
    if ok:
        _scale_cols(A, _group_lasso_factors(nrm, s, a), out)
    return ok


@_jit
def _norms_finite(q, check_finite):
    """False when check_finite and a norm is not finite (then the caller
    writes nothing and raises)."""
    if check_finite:
        for r in range(q.shape[0]):
            if not q[r] < np.inf:
                return False
    return True


def _check_norms(finite: bool) -> None:
    """check_row_norms's error where a compiled call found a norm not finite
    (``finite`` False): the kernels return that verdict, where NumPy's
    isfinite and all on the norms, the first NumPy calls after a training
    step, cost 20-25 us each on the benchmark's MLP (as much as the
    kernels' own passes over a layer)."""
    if not finite:
        raise NonFiniteInput("input contains NaN or Inf")


@_jit
def _group_lasso_factors(q, s, a):
    fac = np.empty(q.shape[0], dtype=np.float64)
    for r in range(q.shape[0]):
        fac[r] = _group_lasso_factor(q[r], s[r], np.float64(a[r]))
    return fac


@_pjit
def _group_lasso_par(W, a, out, nrm):
    for r in prange(W.shape[0]):
        nrm[r] = _group_lasso_row(W[r], np.float64(a[r]), out[r])


@_jit
def _group_lasso_seq(W, a, out, nrm):
    for r in range(W.shape[0]):
        nrm[r] = _group_lasso_row(W[r], np.float64(a[r]), out[r])


def group_lasso(W, a, check_finite=False, *, parallel=True, out=None):
    """x_r = (1 - a_r/||w_r||)_+ w_r: per row, the norm then the scaled copy
    (``out``, which may be ``W``, or a new array).  Rows that are the columns
    of a C-contiguous matrix (W F-contiguous) are read in memory order, all
    groups at once (serial).

    The scaled row norms q_r (O(G) scratch, finite iff the row is) also give
    the fused input check."""
    out = _result(W, out)
    if W.size:
        _group_lasso_route(W, out, parallel)((a,), check_finite)
    return out


def _group_lasso_route(W, out, parallel, hint=None):
    """group_lasso's call for W -> out (W.size > 0) with its route and
    scratch chosen now: ``run((a,), check_finite)`` (see :func:`serial_in_place`)."""
    nrm = np.empty(W.shape[0], dtype=np.float64)
    if _as_columns(W, out):
        A, O = W.T, out.T

        def run(thr, check_finite):
            _check_norms(_group_lasso_cols(A, thr[0], O, nrm, check_finite))

        return run
    par = parallel and _parallel(W)
    kernel, norms = (_group_lasso_par, _row_norms_par) if par else (_group_lasso_seq, _row_norms_seq)
    in_place = np.shares_memory(W, out)  # (once: 20 us a call on a cold cache)

    def run(thr, check_finite):
        if check_finite and in_place:  # check before writing
            norms(W, nrm, np.empty_like(nrm))
            _check_norms(_norms_finite(nrm, True))
        kernel(W, thr[0], out, nrm)
        if check_finite:
            _check_norms(_norms_finite(nrm, True))

    return run


@_jit
def _group_lasso_mid(A3, a, out3, nrm, check_finite):
    """_group_lasso_row on every row A3[:, c, :] (out3 may be A3); with
    check_finite and a non-finite norm, nothing is written and False is
    returned."""
    s = np.empty(A3.shape[1], dtype=np.float64)
    _mid_norms(A3, nrm, s)
    ok = _norms_finite(nrm, check_finite)
    if ok:
        _scale_mid(A3, _group_lasso_factors(nrm, s, a), out3)
    return ok


def group_lasso_channels(W3, a, check_finite=False, *, out=None):
    """group_lasso on the rows W3[:, c, :] of a C-contiguous 3-D array (a
    convolution weight's "channel" rows, W.reshape(O, C, -1)): two passes in
    memory order, serial, into ``out`` (which may be ``W3``) or a new array.
    The row kernels' arithmetic in their order: bit for bit their results on
    the rows copied out."""
    out = _result(W3, out)
    if W3.size:
        nrm = np.empty(W3.shape[1], dtype=np.float64)
        _check_norms(_group_lasso_mid(W3, a, out, nrm, check_finite))
    return out


# ------------------------------------------------------------------ GrOWL


@_pjit
def _row_norms_par(W, q, s):
    for r in prange(W.shape[0]):
        q[r], s[r] = _row_norm(W[r])


@_jit
def _row_norms_seq(W, q, s):
    for r in range(W.shape[0]):
        q[r], s[r] = _row_norm(W[r])


@_jit
def _growl_norms(q, s, w, nS, wS):
    """Norms and weights divided by S, the smallest power of two >= 1 with every
    norm q_r s_r / S below 2^1023 (S = 1 unless a finite row's norm reaches
    2^1023; then only norms and weights 2^1000 times below the largest lose
    bits).  OWL is positively homogeneous: prox_w(n) = S prox_{w/S}(n/S)."""
    emax = -2000
    for r in range(q.shape[0]):
        if q[r] > 0.0 and q[r] < np.inf:
            if s[r] == 1.0 and q[r] < 2.0**1000:
                continue  # norm < 2^1000: cannot make emax exceed 1023 (no libm call)
            _, eq = math.frexp(q[r])
            _, es = math.frexp(s[r])  # s = 2^(es - 1)
            emax = max(emax, eq + es - 1)  # norm < 2^(eq + es - 1)
    k = emax - 1023 if emax > 1023 else 0
    S = math.ldexp(1.0, k)
    for r in range(q.shape[0]):
        nS[r] = q[r] * (s[r] / S)
        wS[r] = np.float64(w[r]) / S
    return S


@_jit
def _rescale_factors(nS, new):
    fac = np.empty(nS.shape[0], dtype=np.float64)
    for r in range(nS.shape[0]):
        fac[r] = new[r] / nS[r] if nS[r] > 0.0 else 0.0
    return fac


@_pjit
def _rescale_rows_par(W, nS, new, out):
    for r in prange(W.shape[0]):
        _scale_row(W[r], new[r] / nS[r] if nS[r] > 0.0 else 0.0, out[r])


@_jit
def _rescale_rows_seq(W, nS, new, out):
    for r in range(W.shape[0]):
        _scale_row(W[r], new[r] / nS[r] if nS[r] > 0.0 else 0.0, out[r])


@_jit
def _growl_seq(A, w, out, cols, check_finite, order=None):
    """growl serially in one compiled call (GrOWL's G <= _OWL_SMALL norms, a
    finite largest weight): groups the rows of the C-contiguous A (cols
    False) or its columns (cols True).  Returns False when check_finite
    and a scaled norm is not finite: then nothing is written (the caller
    raises).  ``order``: _owl_small's kept order."""
    G = A.shape[1] if cols else A.shape[0]
    q = np.empty(G, dtype=np.float64)
    s = np.empty(G, dtype=np.float64)
    if cols:
        _col_norms(A, q, s)
    else:
        _row_norms_seq(A, q, s)
    if not _norms_finite(q, check_finite):
        return False
    nS, new = _growl_small_norms(q, s, w, order)
    if cols:
        _scale_cols(A, _rescale_factors(nS, new), out)
    else:
        _rescale_rows_seq(A, nS, new, out)
    return True


@_jit
def _growl_small_norms(q, s, w, order=None):
    """(nS, new): the norms q s at the scale S of _growl_norms and their OWL
    prox (G <= _OWL_SMALL, one compiled call; ``order``: _owl_small's)."""
    G = q.shape[0]
    nS = np.empty(G, dtype=np.float64)
    wS = np.empty(G, dtype=np.float64)
    _growl_norms(q, s, w, nS, wS)
    new = np.empty(G, dtype=np.float64)
    _owl_small(nS, wS, new, order)
    return nS, new


@_jit
def _growl_mid(A3, w, out3, check_finite, order=None):
    """GrOWL on the rows A3[:, c, :] serially in one compiled call (C <=
    _OWL_SMALL rows, a finite largest weight), as _growl_seq: False when
    check_finite and a scaled norm is not finite (nothing written)."""
    q = np.empty(A3.shape[1], dtype=np.float64)
    s = np.empty(A3.shape[1], dtype=np.float64)
    _mid_norms(A3, q, s)
    ok = _norms_finite(q, check_finite)
    if ok:
        nS, new = _growl_small_norms(q, s, w, order)
        _scale_mid(A3, _rescale_factors(nS, new), out3)
    return ok


def growl_channels(W3, w, check_finite=False, *, out=None, order=None):
    """growl on the rows W3[:, c, :] of a C-contiguous 3-D array (see
    :func:`group_lasso_channels`): the norms in one pass, the OWL of the C
    norms, the rescaling pass; into ``out`` (which may be ``W3``) or a new
    array.  ``order`` (optional, int64, C entries, kept by the caller
    between calls on the same parameter): _owl_small's kept order."""
    out = _result(W3, out)
    if W3.size:
        _growl_channels_into(W3, w, check_finite, out, order)
    return out


def _growl_channels_into(W3, w, check_finite, out, order):
    """growl_channels of a non-empty W3 into ``out`` (checked by the caller)."""
    C = W3.shape[1]
    if C <= _OWL_SMALL and w[0] < np.inf:
        _check_norms(_growl_mid(W3, w, out, check_finite, order))
        return
    q = np.empty(C, dtype=np.float64)
    s = np.empty(C, dtype=np.float64)
    _mid_norms(W3, q, s)
    _check_norms(_norms_finite(q, check_finite))
    nS = np.empty(C, dtype=np.float64)
    wS = np.empty(C, dtype=np.float64)
    _growl_norms(q, s, w, nS, wS)
    _scale_mid(W3, _rescale_factors(nS, owl(nS, wS, parallel=False)), out)


def growl(W, w, check_finite=False, *, parallel=True, out=None):
    """Rows rescaled to the OWL prox of their norms: x_r = (m_r / ||w_r||) w_r
    (into ``out``, which may be ``W``, or a new array; F-contiguous rows are
    read as columns, as in :func:`group_lasso`).

    The norms (and weights) are taken at the scale S of the largest row, so a
    finite W never gives an infinite norm."""
    out = _result(W, out)
    if W.size:
        _growl_route(W, out, parallel)((w,), check_finite)
    return out


def _growl_route(W, out, parallel, hint=None):
    """growl's call for W -> out (W.size > 0) with its route chosen now:
    ``run((w,), check_finite)`` (see :func:`serial_in_place`)."""
    G = W.shape[0]
    cols = _as_columns(W, out)
    par = parallel and _parallel(W) and not cols
    A, O = (W.T, out.T) if cols else (W, out)
    small = not par and G <= _OWL_SMALL and (cols or (W.flags.c_contiguous and out.flags.c_contiguous))
    order = np.full(G, -1, dtype=np.int64) if small else None  # _owl_small's order, kept from call to call

    def run(thr, check_finite):
        w = thr[0]
        if small and w[0] < np.inf:
            _check_norms(_growl_seq(A, w, O, cols, check_finite, order))
            return
        q = np.empty(G, dtype=np.float64)
        s = np.empty(G, dtype=np.float64)
        if cols:
            _col_norms(A, q, s)
        else:
            (_row_norms_par if par else _row_norms_seq)(W, q, s)
        _check_norms(_norms_finite(q, check_finite))
        nS = np.empty(G, dtype=np.float64)
        wS = np.empty(G, dtype=np.float64)
        _growl_norms(q, s, w, nS, wS)
        new = owl(nS, wS, parallel=parallel)
        if cols:
            _scale_cols(A, _rescale_factors(nS, new), O)
        else:
            (_rescale_rows_par if par else _rescale_rows_seq)(W, nS, new, out)

    return run


# ------------------------------------------------------------------ exclusive lasso
#
# Both exclusive operators are per row: find the support of the solution (the
# entries above a threshold), then apply the reference's cancellation-free
# formulas to it.  The support is found without sorting.  With magnitudes y
# (scaled only where a row's sum leaves a safe range), F(t) = sum_i (y_i - t)_+
# and Q(t) = sum_i (y_i - t)_+^2 (sums of non-negative terms, accurate in any
# order), the threshold theta* is the root of the increasing function
#
#     phi(t) = t - b F(t) (1 - a / sqrt(Q(t)))_+        (a = 0: exclusive lasso)
#
# (phi(p) > 0 at an entry p is the reference's test Y_j > b F_j, resp.
# g(c_j) > 0).  For a = 0, phi is concave and piecewise linear and Newton's
# method from the left ends on its last piece (_ex_newton); for a > 0 a
# bracket is narrowed by Newton, secant or bisection points (_gx_theta).  Each
# evaluation is one reassociated (SIMD) pass over the candidates, which also
# gives their least entry mu: a lower point t whose mu lies surely above the
# root (a phi(mu) > 0 read off the sums at t, _gx_root_below; for a = 0 the
# next Newton point not passing mu) ends the search with the support
# {y > t} = {y >= mu}.  Before a pass
# that more passes look set to follow (_worth_compacting; group+exclusive:
# fewer than a quarter of the row remain) the candidates are compacted into
# a scratch row (branch-free, _compact_above), never after the last.  Cost
# per row: one pass over memory for the sum, a handful of passes over the
# row in cache (on Gaussian rows: 2-3 of Newton's for the exclusive lasso,
# b = 1/m; 2-3 for group+exclusive), one for the support's statistics (none
# on an exclusive row whose support follows from the last pass: float64
# rows mostly, float32 rows whose sums are exact, _float32_sums_exact) and
# one writing the output.
# Rows are independent: prange over chunks of rows, one scratch row each.


@_jit
def _phi(t, F, Q, a, b):
    """phi(t) = t - b F (1 - a/sqrt(Q))_+ (F, Q the sums at t): _phi_lane,
    compiled once for the scalar searches."""
    return _phi_lane(t, F, Q, a, b)


@_inline
def _phi_lane(t, F, Q, a, b):
    """phi(t) = t - b F (1 - a/sqrt(Q))_+ (F, Q the sums at t; a = 0: the
    exclusive lasso's t - b F), without branches (selections: b F may be
    inf where the shrink is 0, and is then not taken), so that a loop of it
    over the columns vectorises; inlined there.  The square root and the
    division are taken whatever a is: the row kernels' searches, which
    call it through _phi, measured 0.96-1.02x the time of a branching
    version (benchmarks/ab_rows.py, both operators, 2026-12-04)."""
    n2 = math.sqrt(Q)
    ex = t - b * F if F > 0.0 else t
    gx = t - (b * F) * (1.0 - a / n2) if n2 > a else t
    return ex if a == 0.0 else gx


@_jit
def _newton_point(t, g, F, Q, k, a, b):
    """Newton step t - phi(t)/phi'(t) (phi' = 1 + b (k shrink + a F^2/||z||^3),
    the last term as (a/||z||) (F/||z||)^2: F^2 and ||z||^3 overflow long
    before the ratio, which is at most a k/||z||)."""
    if a == 0.0:
        return t - g / (1.0 + b * k)
    n2 = math.sqrt(Q)
    if not n2 > a:
        return t - g
    r = F / n2
    slope = 1.0 + b * (k * (1.0 - a / n2) + (a / n2) * (r * r))
    return t - g / slope


@intrinsic
def _with_sign_of(typingctx, v, x):
    """v with the sign bit of x or-ed in: copysign(v, x) for v >= +0 (not
    -0 or NaN), one instruction fewer (copysign also clears v's sign)."""
    sig = types.float64(types.float64, types.float64)

    def codegen(context, builder, signature, args):
        i64 = llvm_ir.IntType(64)
        sign = builder.and_(builder.bitcast(args[1], i64), llvm_ir.Constant(i64, 1 << 63))
        return builder.bitcast(builder.or_(builder.bitcast(args[0], i64), sign), llvm_ir.DoubleType())

    return sig, codegen


@_inline
def _support_one(xj, f1, f2, Yk, e, fac):
    """sign(x_j) ((y_j - Yk) + e)_+ fac on y_j >= Yk, else sign(x_j) 0, for
    fac > 0 (the product is then >= +0: _with_sign_of is copysign)."""
    y = (abs(np.float64(xj)) * f1) * f2
    u = (y - Yk) + e
    u = u if (y >= Yk) & (u > 0.0) else 0.0
    return _with_sign_of(u * fac, np.float64(xj))


@_inline
def _lean_magnitude(y, Yk, e):
    """(y - Yk) + e on y >= Yk, else 0: _support_one's magnitude before
    its factor, the same bits for e >= +0 (where y >= Yk, y - Yk >= +0,
    rounding being monotone, and so is the sum: its test u > 0 only maps
    +0 to +0).  Two operations fewer an entry, and the product by a factor
    1 dropped as well: 0.73x the time of the output pass at 300 x 784
    float32.  Yk = inf with y = inf gives NaN where _support_one gives 0
    (a column the row kernel writes after the column pass; overwritten)."""
    u = (y - Yk) + e
    return u if y >= Yk else 0.0


@_jit
def _support_out(x, f1, f2, Yk, e, fac, o):
    """o_j = sign(x_j) ((y_j - Yk) + e)_+ fac on y_j >= Yk, else sign(x_j) 0
    (fac > 0; o may be x: then one array, see _map_seq); where
    e >= +0 (the fast paths' rows always) without the test of u > 0 that
    it implies (_lean_magnitude, the same bits)."""
    if f1 == 1.0 and f2 == 1.0 and e >= 0.0:
        _support_out_lean(x, Yk, e, fac, o)
    elif f1 == 1.0 and f2 == 1.0:
        _support_out_loop(x, 1.0, 1.0, Yk, e, fac, o)
    else:
        _support_out_loop(x, f1, f2, Yk, e, fac, o)


@_inline
def _support_out_lean(x, Yk, e, fac, o):
    if x.ctypes.data == o.ctypes.data:
        for j in range(o.shape[0]):
            o[j] = _support_lean_at(o[j], Yk, e, fac)
    else:
        for j in range(x.shape[0]):
            o[j] = _support_lean_at(x[j], Yk, e, fac)


@_inline
def _support_out_loop(x, f1, f2, Yk, e, fac, o):
    if x.ctypes.data == o.ctypes.data:
        for j in range(o.shape[0]):
            o[j] = _support_one(o[j], f1, f2, Yk, e, fac)
    else:
        for j in range(x.shape[0]):
            o[j] = _support_one(x[j], f1, f2, Yk, e, fac)


@_jit
def _copy_row(x, out):
    for j in range(x.shape[0]):
        out[j] = x[j]


@_jit
def _zero_row(x, out):
    for j in range(x.shape[0]):
        out[j] = x[j] * 0.0


_HUGE_B = 2.0**54


@_jit
def _exclusive_row_huge_b(x, amax, br, o):
    """b >= 2^54: the k entries with |x| = max|x| become max|x| / (1 + b k), the
    rest 0 (1 + b k may overflow: then (max|x| / k) / b, as b k >= 2^1024 makes
    the 1 irrelevant)."""
    k = 0
    for j in range(x.shape[0]):
        k += 1 if abs(np.float64(x[j])) == amax else 0
    den = 1.0 + br * k
    val = amax / den if den < np.inf else (amax / k) / br
    for j in range(x.shape[0]):
        o[j] = math.copysign(val, x[j]) if abs(np.float64(x[j])) == amax else x[j] * 0.0


@_rjit
def _abs_sum_min(x, squares):
    """(sum |x_j|, sum x_j^2, min{|x_j| > 0} (inf if none), #{x_j != 0}) in
    float64 (unscaled: the caller uses the squares only where they cannot
    overflow), one vectorised pass; the minimum through the magnitudes' bits
    in x's own width (see _magnitude_bits).  ``squares`` None: a variant
    without the sum of squares (returned as 0; numba prunes the branch by
    type), for the exclusive lasso, which reads none: 0.74x the pass's time
    on 784 rows of 300 float64, 0.72x float32 (the other sums the same bits)."""
    s = 0.0
    q = 0.0
    inf = _inf_magnitude_bits(x)
    mb = inf
    nnz = 0
    for j in range(x.shape[0]):
        y = abs(np.float64(x[j]))
        b = _magnitude_bits(x[j])
        s += y
        if squares is not None:
            q += y * y
        mb = min(mb, b if b > 0 else inf)
        nnz += 1 if b > 0 else 0
    return s, q, _magnitude_of_bits(mb), nnz


@_jit
def _row_finite(x, total):
    """Whether row x holds no NaN or Inf, given total = sum |x_j| from the
    first pass: yes when the sum is finite, else (NaN, Inf, or an overflow of
    finite entries) a pass decides."""
    if total < np.inf:
        return True
    for j in range(x.shape[0]):
        if not abs(np.float64(x[j])) < np.inf:
            return False
    return True


@_jit
def _support_may_be_all(ymin, S, nnz, m, a, b):
    """False only where phi(ymin) <= 0 for certain (then the search runs
    without the fast path's pass), from the first pass alone: with S the row
    sum (error below m eps S) and nnz its nonzero entries, F(ymin) = S - nnz
    ymin >= F_lo, and sqrt(Q(ymin)) >= F/sqrt(nnz) (Cauchy-Schwarz) gives
    phi(ymin) <= ymin - b (F_lo - a sqrt(nnz))_+ (a = 0: the exclusive
    lasso).  Unscaled rows only (the caller's condition)."""
    F_lo = S * (1.0 - (m + 8) * 2.0**-52) - nnz * ymin * (1.0 + 2.0**-52)
    bound = F_lo - a * math.sqrt(np.float64(nnz)) * (1.0 + 2.0**-50)
    return not (bound > 0.0 and ymin < (b * bound) * (1.0 - 2.0**-50))


@_jit
def _scaled_min(ymin, f1, f2):
    """The least nonzero magnitude the passes read, (ymin f1) f2 (rounding is
    monotone, so the minimum of the scaled values is the scaled minimum), or
    0 when unknown: a scaled copy is read (f1 != 1) or it underflows to 0
    (then scaled entries may vanish); 0 turns the fast path off."""
    return (ymin * f1) * f2 if f1 == 1.0 and ymin < np.inf else 0.0


@_rjit
def _ex_sums(src, n, f1, f2, t, row):
    """F(t) = sum (y - t)_+, k(t) = #{y > t}, min{y > t} (inf if none) and,
    for a float32 row, S(t) = sum_{y > t} y, over y = (|src_j| f1) f2,
    j < n, in one vectorised pass: sums of non-negative terms, and the
    minimum through the values' bits (an integer reduction, as in
    _min_above).  ``row``: an entry of the row solved (src is the row or a
    float64 copy of some of its magnitudes), whose type picks the variant.

    float32 rows: the pass sums the magnitudes, S(t), and F(t) = S(t) - k t
    (floored at 0): the same cost, and where S(t) is exact
    (_float32_sums_exact, the usual case) the support's F_k = S - k Y_k
    after the search costs no pass (_exclusive_core).  Its error, about
    u (S + k t) with u = 2^-53 beside the summation's, moves a Newton
    point t' = t + (b F - t)/(1 + b k) by about 2 u (t + b S/(1 + b k)):
    ulps of t', like the direct sum's m u F (b F/(1 + b k) <= t' as
    phi(t) <= 0).  float64 rows: F(t) summed directly (S returned as
    -1), which their shortcut after the search needs (F_k = F_t - k (Y_k -
    t), see _exclusive_core)."""
    if f1 == 1.0 and f2 == 1.0:
        return _ex_sums_loop(src, n, 1.0, 1.0, t, row)
    return _ex_sums_loop(src, n, f1, f2, t, row)


@_inline
def _ex_sums_loop(src, n, f1, f2, t, row):
    F = 0.0
    S = 0.0
    k = 0
    mb = np.int64(_INF_BITS)
    for j in range(n):
        y = (abs(np.float64(src[j])) * f1) * f2
        d = y - t
        if _is_float32(row):
            S += y if d > 0.0 else 0.0
        else:
            F += d if d > 0.0 else 0.0
        k += 1 if d > 0.0 else 0
        mb = min(mb, _bits(y) if d > 0.0 else np.int64(_INF_BITS))
    if _is_float32(row):
        return max(S - k * t, 0.0), k, _from_bits(mb), S
    return F, k, _from_bits(mb), -1.0


@_jit
def _float32_sums_exact(x, S, Y):
    """Whether S, a float64 sum (in any order) of float32 magnitudes >= Y of
    row x, is exact, and with it S - k Y = sum (y - Y) over its k terms,
    bit for bit what a pass summing the differences (_gx_sums) gives.
    Every term, and k Y, is a multiple of u = ulp_32(Y) >= Y 2^-24, so every
    partial sum (and S - k Y >= 0) is exact while below 2^53 u; S < 2^29 Y
    bounds them (a computed sum of non-negative terms reaches 2^53 u, a
    float, if the exact one does).  Always False for float64 rows."""
    return _is_float32(x[0]) and Y > 0.0 and Y < np.inf and S < 2.0**29 * Y


@_jit
def _ex_newton(x, f1, f2, b, total, nnz, buf):
    """The exclusive-lasso support: Newton's method from the left on the
    increasing, concave, piecewise-linear phi(t) = t - b F(t), F(t) =
    sum (y - t)_+.  Each step t' = t + (b F - t)/(1 + b k) is the formula
    tau = b S/(1 + b k) on the current candidates {y > t} (Michelot's
    algorithm); it never passes the root.  The pass at t also gives
    mu = min{y > t}: if mu > t', no entry lies in (t, t'], so the step
    stayed on t's linear piece and landed on the root, and the support is
    {y > t} = {y >= mu}.  The search stops there, without the pass at t'
    (which would only find k unchanged: the same stop, one pass later).
    The first point is b total/(1 + b nnz), nnz = #{y > 0} (the slope of
    phi at 0+ is 1 + b nnz: left of the root; on rows with zeros higher
    than the b total/(1 + b m) it replaced, the same point without).
    About 2-3 passes on Gaussian rows with b = 1/m (3-4 with b = 10/m),
    more for one-entry supports.  Passes are vectorised over the row.
    Before a pass (never after the last) the candidates are compacted into
    buf (float64, scaled; _compact_above) and the later passes run over
    them, once few remain and the search looks set to go on for several
    passes (_worth_compacting); then again each time they halve.

    Returns (Y_k, k, n, in_buf, F_t, t, S_t): Y_k = mu at the last point t,
    the support's least entry (inf if none), k its size, F_t = F(t) (the
    support is {y > t}), S_t its sum (float32 rows; -1 for float64 rows,
    see _ex_sums); the support is among the row's entries (n = m) or
    among buf[:n] (compacted at an earlier, lower point: a superset)."""
    m = x.shape[0]
    t = (b * total) / (1.0 + b * nnz)
    F, k, mu, S = _ex_sums(x, m, f1, f2, t, x[0])
    n = m
    in_buf = False
    k_before = nnz
    for _ in range(m + 4):
        tn = t + (b * F - t) / (1.0 + b * k)
        if not (tn > t and tn >= mu):
            break
        if not in_buf and _worth_compacting(k, k_before, m, b):
            n = _compact_above(x, m, f1, f2, t, buf)
            in_buf = True
        elif in_buf and 2 * k < n:
            n = _compact_above(buf, n, 1.0, 1.0, t, buf)
        t = tn
        k_before = k
        if in_buf:
            F, k, mu, S = _ex_sums(buf, n, 1.0, 1.0, t, x[0])
        else:
            F, k, mu, S = _ex_sums(x, m, f1, f2, t, x[0])
    return mu, k, n, in_buf, F, t, S


@_jit
def _worth_compacting(k, k_before, m, b):
    """Whether the exclusive search (_ex_newton), about to make another pass
    over its k candidates among the m entries of the row, should compact
    them first (k_before: the candidates at the point before; b the row's
    b).  The compaction is a scalar pass (branch-free stores, about 2.5
    times a vectorised pass over the row, 784 x 300 float64), which pays
    back only over about three passes over the fewer candidates.  Newton's
    method from the left ends in 1-2 passes once its steps stop removing
    many candidates (Gaussian rows, b = 10/m: candidates 300, 146, 83, 73,
    the end), but takes many while each step still halves them (one-entry
    supports: 300, 122, 57, 23, 9, 4, 2, 1).  So: fewer than an eighth of
    the row, at most half of the point before's; or fewer than a quarter
    with b k >= 64, where the next point b S/(1 + b k) lies within 1/65 of
    the candidates' mean S/k, and the search goes on, removing the
    candidates below about their mean at every step.  Measured
    (benchmarks/ab_rows.py, serial, 784 x 300, 300 x 784 and 512 x 4608),
    against compacting after any pass that left fewer than a quarter:
    Gaussian rows with b = 10/m 0.77-0.86x the time, b = 50/m 0.91-0.95x,
    Student-t rows (2 degrees of freedom) b = 10/m 0.89-0.92x and b = 1e3/m
    1.00-1.04x, one-entry supports (b = 1e4/m) 1.00-1.03x, b = 1/m (no
    compaction) the same.
    float32 rows give the same bits; float64 rows may differ in the last
    bit where a pass sums F_t over the row instead of the compacted
    candidates (another order of the same terms)."""
    return (8 * k < m and 2 * k <= k_before) or (4 * k < m and b * k >= 64.0)


@intrinsic
def _bits(typingctx, x):
    """The IEEE bits of a float64 as an int64 (ordered as the float for x >= 0)."""
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_ir.IntType(64))

    return sig, codegen


@intrinsic
def _from_bits(typingctx, b):
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_ir.DoubleType())

    return sig, codegen


_INF_BITS = 0x7FF0000000000000


def _int_like(fty):
    return types.int32 if fty == types.float32 else types.int64


@intrinsic
def _magnitude_bits(typingctx, x):
    """The IEEE bits of |x| in x's own width (int32 for float32, int64 for
    float64): ordered as the magnitudes, NaNs above inf.  float32 data keeps
    eight lanes per AVX2 register where float64 bits would give four."""
    ity = _int_like(x)
    sig = ity(x)

    def codegen(context, builder, signature, args):
        width = 32 if ity == types.int32 else 64
        raw = builder.bitcast(args[0], llvm_ir.IntType(width))
        return builder.and_(raw, llvm_ir.Constant(llvm_ir.IntType(width), (1 << (width - 1)) - 1))

    return sig, codegen


@intrinsic
def _inf_magnitude_bits(typingctx, x):
    """_magnitude_bits(inf) in x's width (x, a float or an array of them,
    only gives the type)."""
    ity = _int_like(getattr(x, "dtype", x))
    sig = ity(x)

    def codegen(context, builder, signature, args):
        if ity == types.int32:
            return llvm_ir.Constant(llvm_ir.IntType(32), 0x7F800000)
        return llvm_ir.Constant(llvm_ir.IntType(64), _INF_BITS)

    return sig, codegen


@intrinsic
def _is_float32(typingctx, x):
    """Whether x is a float32 (a constant of the compiled variant)."""
    sig = types.boolean(x)

    def codegen(context, builder, signature, args):
        return llvm_ir.Constant(llvm_ir.IntType(1), int(x == types.float32))

    return sig, codegen


@intrinsic
def _magnitude_of_bits(typingctx, b):
    """The float64 value of bits from _magnitude_bits (exact: float32 widens)."""
    sig = types.float64(b)

    def codegen(context, builder, signature, args):
        if b == types.int32:
            return builder.fpext(builder.bitcast(args[0], llvm_ir.FloatType()), llvm_ir.DoubleType())
        return builder.bitcast(args[0], llvm_ir.DoubleType())

    return sig, codegen


@_jit
def _min_above(src, n, f1, f2, t):
    """min{y > t} over y = (|src_j| f1) f2 >= 0, j < n (inf if none), as the
    minimum of the values' bits: an integer reduction, which LLVM vectorises
    (a float minimum it does not, without fast-math flags that would also
    drop NaN and signed-zero semantics elsewhere)."""
    if f1 == 1.0 and f2 == 1.0:
        return _min_above_loop(src, n, 1.0, 1.0, t)
    return _min_above_loop(src, n, f1, f2, t)


@_inline
def _min_above_loop(src, n, f1, f2, t):
    m = np.int64(_INF_BITS)
    for j in range(n):
        y = (abs(np.float64(src[j])) * f1) * f2
        c = _bits(y) if y > t else np.int64(_INF_BITS)
        m = min(m, c)
    return _from_bits(m)


def _scaled_abs_copy(x, f1, f2):  # pragma: no cover - replaced by the overload below in compiled code
    """(|x_j| f1) f2 in a new float64 row (exact: powers of two), for the
    row kernels' scaled float64 rows.  For a row of subnormals (f1 != 1,
    f1 f2 > 2^1024): inside a reassociated pass (_ex_sums, _gx_sums) LLVM
    may fold (|x| f1) f2 into |x| (f1 f2) = inf, so such rows are scaled
    here, once, and the passes read the copy.  float32 rows are never
    scaled: their sums lie in [2^-149, m 2^128], inside the unscaled ranges
    of _exclusive_row and _group_exclusive_row for any m < 2^251.  For them
    this returns x itself where f1 = f2 = 1 and raises otherwise
    (unreachable), so that a float32 row kernel compiles its passes over
    float32 rows only: a float64 copy here compiled every core a second
    time, over float64 (4-5 s of a first call on a 2-core Zen 4)."""
    raise NotImplementedError


@overload(_scaled_abs_copy)
def _scaled_abs_copy_overload(x, f1, f2):
    if x.dtype == types.float32:
        def unscaled(x, f1, f2):  # (the passes take |x| themselves)
            if f1 != 1.0 or f2 != 1.0:
                raise AssertionError("float32 rows are never scaled")
            return x
        return unscaled

    def copy(x, f1, f2):
        y = np.empty(x.shape[0], dtype=np.float64)
        for j in range(x.shape[0]):
            y[j] = (abs(x[j]) * f1) * f2
        return y
    return copy


@_jit
def _exclusive_core(x, src, g1, g2, f1, f2, s, br, total, nnz, o, buf, ymin):
    """_exclusive_row once scaled: the passes read y = (|src| g1) g2, the
    output is formed from y = (|x| f1) f2 (the same values); total and nnz
    the sum and count of the y > 0.

    First, when ymin = min{y > 0} is known (> 0): if phi(ymin) = ymin - b F(ymin)
    > 0, the threshold lies below every nonzero entry, so the support is all
    of them, with the statistics at Y_k = ymin that decided it: the output
    follows with no search (the common case of a training step, whose
    thresholds are small against the weights).  Otherwise the search
    (_ex_newton), then the support's statistics F_k = sum (y - Y_k)_+ and
    k = #{y >= Y_k}.  Each of the two costs a pass, except on float32 rows
    whose sums are exact (_float32_sums_exact): then the fast path's F_k =
    S - k Y_k comes from the first pass (S = total; the same bits); and on
    float64 rows after the search, whose last pass, at t, gave the support
    {y > t} with F_t = F(t): F_k = F_t - k (Y_k - t) where that subtraction
    cancels at most half (k (Y_k - t) <= F_t / 2), so F_k's error stays
    within about twice a direct sum's, (2k + 4) u F_k (u = 2^-53; 784 x 300 rows,
    b = 1/m and 10/m: 0.89x and 0.93x the time, serially).  float32 rows
    do not take F_t's shortcut: their results are the column passes' bit
    for bit where the sums are exact (_exclusive_cols), which F_t's
    rounding would break in the last bit of a few entries.  Their search
    passes sum the candidates themselves instead of their excess (_ex_sums:
    F(t) = S(t) - k t, the same cost), so the last one gives the support's
    sum S_t, exact where _float32_sums_exact says so, and F_k = S_t - k Y_k
    is then exact too: the direct pass's bits, without the pass (an
    in-process A/B, serial, the same results bit for bit: 784 x 300 rows
    0.77-0.80x (b = 1/m) and 0.91-0.92x (b = 10/m) the time, 512 x 4608
    rows 0.80-0.81x and 0.95-0.98x).  Where S_t is not exact, or the
    support is empty, the direct pass."""
    m = x.shape[0]
    if ymin > 0.0:
        if _float32_sums_exact(src, total, ymin):
            Fk, k = total - nnz * ymin, nnz
        else:
            Fk, _, k = _gx_sums(src, m, g1, g2, ymin)
        if ymin - br * Fk > 0.0:
            _support_out(x, f1, f2, ymin, (ymin - br * Fk) / (1.0 + br * k), s, o)
            return
    Yk, k, n, in_buf, Ft, t, St = _ex_newton(src, g1, g2, br, total, nnz, buf)
    kd = k * (Yk - t)
    if k > 0 and _float32_sums_exact(src, St, Yk):
        Fk = St - k * Yk
    elif k > 0 and kd <= 0.5 * Ft and not _is_float32(x[0]):
        Fk = Ft - kd
    elif in_buf:
        Fk, _, k = _gx_sums(buf, n, 1.0, 1.0, Yk)
    else:
        Fk, _, k = _gx_sums(src, n, g1, g2, Yk)
    e = (Yk - br * Fk) / (1.0 + br * k)
    _support_out(x, f1, f2, Yk, e, s, o)


@_jit
def _exclusive_row(x, br, o, buf):
    """Exclusive lasso on one row: with Y_k the support's least entry
    (_ex_newton: the support is {y >= Y_k}) and F_k, k its statistics,
    |x_i| = ((|w_i| - Y_k) + e) s on the support,
    e = (Y_k - b F_k)/(1 + b k) = Y_k - tau >= 0: the reference's
    cancellation-free exclusive_magnitudes (two non-negative terms; a
    reference point t below Y_k would make e = t - tau negative and cancel
    against |w_i| - t).  float32 rows and
    float64 rows whose sum lies in [m 2^-500, 2^500] are used unscaled (no
    product can over- or underflow there; scaling by a power of two would
    change no rounding); others are scaled by s, max|x|/s in [1, 2).
    Passes over the row: the first (sum, count and least nonzero
    magnitude); where the support is every nonzero entry, its sums and the
    output (float32 rows whose sums are exact: no pass for the support's
    sums, see _exclusive_core); else about 2-3 of Newton's, the support's
    sums (mostly from Newton's last pass: float64 rows from its F_t,
    float32 rows whose sums are exact from its S_t), the output.
    Returns whether the row holds no NaN or Inf (_row_finite); one that
    does is copied as it is."""
    m = x.shape[0]
    total, _, ymin, nnz = _abs_sum_min(x, None)
    if not _row_finite(x, total):  # nothing to solve: NaN and Inf pass through
        _copy_row(x, o)
        return False
    if total == 0.0 or br == 0.0:
        _copy_row(x, o)
        return True
    if not br < np.inf:
        _zero_row(x, o)
        return True
    if br >= _HUGE_B:
        _exclusive_row_huge_b(x, _absmax(x), br, o)
        return True
    s = f1 = f2 = 1.0
    if not (total <= 2.0**500 and total >= m * 2.0**-500):
        s, f1, f2 = _scale_factors(_absmax(x))
        total = (total * f1) * f2 if total < np.inf else _sum_scaled(x, f1, f2)
    if f1 != 1.0:  # the passes read a scaled copy (see _scaled_abs_copy)
        _exclusive_core(x, _scaled_abs_copy(x, f1, f2), 1.0, 1.0, f1, f2, s, br, total, nnz, o, buf, 0.0)
    else:
        if s == 1.0 and not _float32_sums_exact(x, total, ymin) and not _support_may_be_all(ymin, total, nnz, m, 0.0, br):
            ymin = 0.0  # (no fast path: its test would cost a pass)
        _exclusive_core(x, x, f1, f2, f1, f2, s, br, total, nnz, o, buf, _scaled_min(ymin, f1, f2))
    return True


def _chunks(G):
    return min(G, 64)


@_pjit
def _exclusive_par(W, b, out, nch):
    """_exclusive_row on every row; whether every row was finite."""
    G, m = W.shape
    ok = np.ones(nch, dtype=np.bool_)
    for ch in prange(nch):
        buf = np.empty(m, dtype=np.float64)
        for r in range(ch * G // nch, (ch + 1) * G // nch):
            if not _exclusive_row(W[r], np.float64(b[r]), out[r], buf):
                ok[ch] = False
    return ok.all()


@_jit
def _exclusive_seq(W, b, out):
    G, m = W.shape
    buf = np.empty(m, dtype=np.float64)
    ok = True
    for r in range(G):
        ok &= _exclusive_row(W[r], np.float64(b[r]), out[r], buf)
    return ok


@_rjit
def _col_pass1(A, S, Q, mb, xb, nz, T=None, F1=None, Q1=None):
    """Per column g of A, over the magnitudes y = |A_ig| above T_g (T None:
    above 0; "above" is not y <= T_g, so a NaN counts and makes S NaN):
    S_g their sum and Q_g the sum of their squares (float64), mb_g the bits
    of their minimum (_magnitude_bits, A's width; inf's bits where there is
    none), nz_g their number; xb_g the bits of max |A_ig| over the whole
    column (0 when every entry is 0); F1_g and Q1_g the sums of y - T_g and
    of its squares over the same magnitudes (T None: 0), the shifted sums
    of :func:`_shifted_support_sums`.  Q, xb, nz, F1 and Q1 may be None:
    numba then compiles a variant without them (the branches pruned by
    type).  One pass in memory order, four rows of A per update (the
    minimum an integer one, which LLVM vectorises, as in _min_above);
    float32 A without the shifted sums: in its bits (_col_pass1_bits)."""
    _col_pass1_of(A, S, Q, mb, xb, nz, T, F1, Q1)


def _col_pass1_of(A, S, Q, mb, xb, nz, T, F1, Q1):  # pragma: no cover - replaced by the overload below in compiled code
    raise NotImplementedError


@overload(_col_pass1_of)
def _col_pass1_of_overload(A, S, Q, mb, xb, nz, T, F1, Q1):
    """_col_pass1_bits for float32 A without shifted sums, _col_pass1_floats otherwise."""
    if A.dtype == types.float32 and isinstance(F1, (types.NoneType, types.Omitted)):
        return lambda A, S, Q, mb, xb, nz, T, F1, Q1: _col_pass1_bits(A, S, Q, mb, xb, nz, T)
    return lambda A, S, Q, mb, xb, nz, T, F1, Q1: _col_pass1_floats(A, S, Q, mb, xb, nz, T, F1, Q1)


@_jit
def _f32_bits_at_most(t):
    """The bits (_magnitude_bits) of the largest float32 <= t, for t >= 0
    (inf: inf's); -1 where there is none (t < 0 or NaN), so that a float32
    magnitude y is not y <= t exactly where its bits exceed these (a NaN's
    exceed inf's)."""
    if not t >= 0.0:
        return np.int32(-1)
    if t >= np.inf:
        return np.int32(0x7F800000)
    f = np.float32(t)  # (rounded to nearest: one float32 step above t at most)
    bits = _magnitude_bits(f)
    return bits - np.int32(1) if np.float64(f) > t else bits


@_rjit
def _col_pass1_bits(A, S, Q, mb, xb, nz, T):
    """_col_pass1 on float32 A, the same results, with its tests on the
    magnitudes' bits in eight-lane int32 arithmetic: "above T_g" is bits
    above _f32_bits_at_most(T_g), and an entry's float64 magnitude (to
    sum) is the widened bits, or 0 where not above; the counts in int32
    (copied into nz after the pass; a column of 2^31 rows or more takes
    _col_pass1_floats).  0.77x the time of _col_pass1_floats at 300 x 784."""
    P, G = A.shape
    if P >= 2**31 - 1:
        _col_pass1_floats(A, S, Q, mb, xb, nz, T)
        return
    _col_pass1_reset(A, S, Q, mb, xb)
    inf = _inf_magnitude_bits(A[0, 0])
    zero = np.int32(0)
    one = np.int32(1)
    tb = np.zeros(G, dtype=np.int32)
    count = np.zeros(G, dtype=np.int32)
    if T is not None:
        for g in range(G):
            tb[g] = _f32_bits_at_most(T[g])
    i = 0
    while i + 4 <= P:
        r0, r1, r2, r3 = A[i], A[i + 1], A[i + 2], A[i + 3]
        for g in range(G):
            t = tb[g]
            b0, b1 = _magnitude_bits(r0[g]), _magnitude_bits(r1[g])
            b2, b3 = _magnitude_bits(r2[g]), _magnitude_bits(r3[g])
            a0, a1, a2, a3 = b0 > t, b1 > t, b2 > t, b3 > t
            z0, z1 = _magnitude_of_bits(b0 if a0 else zero), _magnitude_of_bits(b1 if a1 else zero)
            z2, z3 = _magnitude_of_bits(b2 if a2 else zero), _magnitude_of_bits(b3 if a3 else zero)
            S[g] += (z0 + z1) + (z2 + z3)
            if Q is not None:
                Q[g] += (z0 * z0 + z1 * z1) + (z2 * z2 + z3 * z3)
            m01 = min(b0 if a0 else inf, b1 if a1 else inf)
            m23 = min(b2 if a2 else inf, b3 if a3 else inf)
            mb[g] = min(mb[g], min(m01, m23))
            if xb is not None:
                xb[g] = max(xb[g], max(max(b0, b1), max(b2, b3)))
            count[g] += ((one if a0 else zero) + (one if a1 else zero)) + ((one if a2 else zero) + (one if a3 else zero))
        i += 4
    for i in range(i, P):
        row = A[i]
        for g in range(G):
            b = _magnitude_bits(row[g])
            above = b > tb[g]
            z = _magnitude_of_bits(b if above else zero)
            S[g] += z
            if Q is not None:
                Q[g] += z * z
            mb[g] = min(mb[g], b if above else inf)
            if xb is not None:
                xb[g] = max(xb[g], b)
            count[g] += one if above else zero
    if nz is not None:
        for g in range(G):
            nz[g] = count[g]


@_jit
def _col_pass1_reset(A, S, Q, mb, xb):
    """_col_pass1's sums and maxima at 0, its minima at inf's bits (A's
    width), before the pass."""
    inf = _inf_magnitude_bits(A[0, 0])
    for g in range(S.shape[0]):
        S[g] = 0.0
        mb[g] = inf
        if Q is not None:
            Q[g] = 0.0
        if xb is not None:
            xb[g] = 0


@_rjit
def _col_pass1_floats(A, S, Q, mb, xb, nz, T, F1=None, Q1=None):
    """_col_pass1 on the magnitudes as float64 (any float dtype)."""
    P, G = A.shape
    _col_pass1_reset(A, S, Q, mb, xb)
    if F1 is not None:
        for g in range(G):
            F1[g] = 0.0
            if Q1 is not None:
                Q1[g] = 0.0
    inf = _inf_magnitude_bits(A[0, 0])
    if nz is not None:
        for g in range(G):
            nz[g] = 0
    i = 0
    while i + 4 <= P:
        r0, r1, r2, r3 = A[i], A[i + 1], A[i + 2], A[i + 3]
        for g in range(G):
            t = T[g] if T is not None else 0.0
            y0, y1 = abs(np.float64(r0[g])), abs(np.float64(r1[g]))
            y2, y3 = abs(np.float64(r2[g])), abs(np.float64(r3[g]))
            a0, a1, a2, a3 = not y0 <= t, not y1 <= t, not y2 <= t, not y3 <= t
            z0, z1 = (y0 if a0 else 0.0), (y1 if a1 else 0.0)
            z2, z3 = (y2 if a2 else 0.0), (y3 if a3 else 0.0)
            S[g] += (z0 + z1) + (z2 + z3)
            if Q is not None:
                Q[g] += (z0 * z0 + z1 * z1) + (z2 * z2 + z3 * z3)
            if F1 is not None:  # (the shifted sums: d = y - t where above, else 0)
                d0, d1 = (y0 - t if a0 else 0.0), (y1 - t if a1 else 0.0)
                d2, d3 = (y2 - t if a2 else 0.0), (y3 - t if a3 else 0.0)
                F1[g] += (d0 + d1) + (d2 + d3)
                if Q1 is not None:
                    Q1[g] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
            b0, b1 = _magnitude_bits(r0[g]), _magnitude_bits(r1[g])
            b2, b3 = _magnitude_bits(r2[g]), _magnitude_bits(r3[g])
            m01 = min(b0 if a0 else inf, b1 if a1 else inf)
            m23 = min(b2 if a2 else inf, b3 if a3 else inf)
            mb[g] = min(mb[g], min(m01, m23))
            if xb is not None:
                xb[g] = max(xb[g], max(max(b0, b1), max(b2, b3)))
            if nz is not None:
                nz[g] += ((1 if a0 else 0) + (1 if a1 else 0)) + ((1 if a2 else 0) + (1 if a3 else 0))
        i += 4
    for i in range(i, P):
        row = A[i]
        for g in range(G):
            t = T[g] if T is not None else 0.0
            y = abs(np.float64(row[g]))
            above = not y <= t
            z = y if above else 0.0
            S[g] += z
            if Q is not None:
                Q[g] += z * z
            if F1 is not None:
                d = y - t if above else 0.0
                F1[g] += d
                if Q1 is not None:
                    Q1[g] += d * d
            b = _magnitude_bits(row[g])
            mb[g] = min(mb[g], b if above else inf)
            if xb is not None:
                xb[g] = max(xb[g], b)
            if nz is not None:
                nz[g] += 1 if above else 0


@_rjit
def _col_support_sums(A, Y, F, D2, k):
    """Per column g: F_g = sum (y - Y_g)_+, D2_g = sum (y - Y_g)_+^2 and k_g =
    #{y >= Y_g} over y = |A_ig| (as _gx_sums, not strict); four rows of A
    per update.  Any of F, D2, k may be None, as Q in _col_pass1: D2 alone
    (F and k None) is a pass of _support_sums, the same bits of D2 as with
    F and k (the same operations on it; a test pins it)."""
    P, G = A.shape
    for g in range(G):
        if F is not None:
            F[g] = 0.0
        if k is not None:
            k[g] = 0
        if D2 is not None:
            D2[g] = 0.0
    i = 0
    while i + 4 <= P:
        r0, r1, r2, r3 = A[i], A[i + 1], A[i + 2], A[i + 3]
        for g in range(G):
            yg = Y[g]
            d0, d1 = abs(np.float64(r0[g])) - yg, abs(np.float64(r1[g])) - yg
            d2, d3 = abs(np.float64(r2[g])) - yg, abs(np.float64(r3[g])) - yg
            p0, p1 = (d0 if d0 > 0.0 else 0.0), (d1 if d1 > 0.0 else 0.0)
            p2, p3 = (d2 if d2 > 0.0 else 0.0), (d3 if d3 > 0.0 else 0.0)
            if F is not None:
                F[g] += (p0 + p1) + (p2 + p3)
            if D2 is not None:
                D2[g] += (p0 * p0 + p1 * p1) + (p2 * p2 + p3 * p3)
            if k is not None:
                k[g] += ((1 if d0 >= 0.0 else 0) + (1 if d1 >= 0.0 else 0)) + ((1 if d2 >= 0.0 else 0) + (1 if d3 >= 0.0 else 0))
        i += 4
    for i in range(i, P):
        row = A[i]
        for g in range(G):
            d = abs(np.float64(row[g])) - Y[g]
            p = d if d > 0.0 else 0.0
            if F is not None:
                F[g] += p
            if D2 is not None:
                D2[g] += p * p
            if k is not None:
                k[g] += 1 if d >= 0.0 else 0


_COL_SEARCH_ROUNDS = 4  # candidate rounds of the column search before the row kernel takes a column


@_jit
def _tau_below(S, n, P, a, b):
    """A lower bound of tau, the root of phi(t) = t - b F(t) (1 - a/sqrt(Q(t)))_+
    (a = 0: the exclusive lasso), from the sum S of the n magnitudes of a
    column (of P entries) that may be on the support (all above some t' <=
    tau; the sum's error below P eps S).

    F(t) >= S - n t (each (y - t)_+ >= y - t) and sqrt(Q(t)) >= F(t)/sqrt(n)
    (Cauchy-Schwarz), so phi(t) <= t - b (S - n t - a sqrt(n))_+, which
    vanishes at tau_0 = b (S - a sqrt(n))/(1 + b n); phi increases, so
    tau_0 <= tau (for a = 0 and n the nonzero entries: Michelot's first
    step).  Formed from a lowered S and a raised a sqrt(n), then lowered by
    8 units for the three operations; 0 where the difference is not
    positive or tau_0 is near the subnormals (a rounded-up subnormal could
    exceed it).  Without branches (selections), so that a loop of it over
    the columns vectorises."""
    return _tau_below_at(S, n, P, a, b, math.sqrt(np.float64(n)))


@_jit
def _tau_below_at(S, n, P, a, b, r):
    """_tau_below with sqrt(n) replaced by r >= F(t)/sqrt(Q(t)) for every
    t >= T, where S, n are the sums above T (_ratio_above gives such an r
    from the sums of (y - T)_+ and its squares; sqrt(n) is one for any T):
    phi(t) <= t - b (S - n t - a r)_+ for t >= T, which vanishes at
    b (S - a r)/(1 + b n) (the same margins as _tau_below; r's own error
    within its factor 1 + 2^-50)."""
    S_lo = S * (1.0 - (P + 8) * 2.0**-52)
    d = S_lo - a * r * (1.0 + 2.0**-50) if a > 0.0 else S_lo
    t = ((b * d) / (1.0 + b * np.float64(n))) * (1.0 - 8 * 2.0**-52)
    return t if (d > 0.0) & (t >= 2.0**-1000) else 0.0


@_jit
def _ratio_above(F, Q, n, P):
    """An upper bound of F(t)/sqrt(Q(t)) for every t >= T, where F = sum
    (y - T)_+ and Q = sum (y - T)_+^2 (as summed: non-negative terms, each
    sum's error below (P + 2) eps of it) over the n magnitudes above T;
    an upper bound once multiplied by 1 + 2^-50, as _tau_below_at does: the
    cap sqrt(n) is rounded to nearest, as _tau_below has it (the bound
    from F and Q is one without that factor).

    F(t)^2/Q(t) does not increase with t: where no magnitude equals t its
    derivative is 2 F (F^2 - k Q)/Q^2 <= 0 (F' = -k, Q' = -2F, and
    F^2 <= k Q by Cauchy-Schwarz, k = #{y > t}), and both are continuous.
    So sqrt(F(T)^2/Q(T)) bounds the ratio above T, formed here from a
    raised F and a lowered Q; at most sqrt(n) (Cauchy-Schwarz), which is
    also the answer where Q may have lost terms to underflow (Q below
    2^-900) or is not a number.  Near tau this is about the ratio at tau
    itself, where sqrt(n) is not: on Gaussian columns F/sqrt(Q) is about
    0.6-0.8 sqrt(n), and with sqrt(n) the candidate search of
    group+exclusive stopped short of tau (the row kernel then took every
    column)."""
    rn = math.sqrt(np.float64(n))
    q = (Q * (1.0 - (P + 8) * 2.0**-52)) if Q > 2.0**-900 else 0.0
    f = F * (1.0 + (P + 8) * 2.0**-52)
    r = (f / math.sqrt(q)) * (1.0 + 2.0**-50) if q > 0.0 else rn
    return r if r < rn else rn


@_jit
def _exclusive_col_search(A, a, b, Y, T, F, D2, k, S1, nz1, mb1, xb, FT, QT):
    """The support of the exclusive lasso (D2, FT, QT None) or group+exclusive on
    the columns g with T_g < inf, a lower bound of their tau (_tau_below;
    Y_g the least nonzero magnitude, T_g = inf on the columns left as they
    are).

    Every magnitude <= T_g <= tau is off the support, so the least magnitude
    above T_g, Y_g, is the support's least entry if phi(Y_g) > 0 (the fast
    path's test, on the support sums at Y_g), and the support is then
    {y >= Y_g}.  If not, the magnitudes above T_g give a higher lower bound
    (_tau_below over them; group+exclusive's _tau_below_at, below) and the
    next candidate, for up to
    _COL_SEARCH_ROUNDS rounds of two passes (one for the candidates and the
    sums above T, _col_pass1 with T; one for the support sums at the candidates,
    _support_sums, which leaves F, D2, k right for every column).  A
    column still undecided keeps a Y_g with phi(Y_g) <= 0 and goes to the
    row kernel (the caller's test).  In training, the prox zeroes entries
    and the gradient step revives them as tiny magnitudes below tau: one
    round skips them.

    float32 (xb: the first pass's largest magnitudes, None for no shortcut;
    S1, nz1, mb1 its sums, nonzero counts and least magnitudes): F and k
    come from the sums above T_g (F = S - n Y: {y > T_g} = {y >= Y_g}), or
    from the first pass for the other columns, where they are exact
    (_support_sums, whose proof holds for any Y_g = the least of the
    entries summed): then a round of the exclusive lasso makes one pass,
    and group+exclusive's second pass sums D2 alone.

    group+exclusive bounds F/sqrt(Q) above T_g by its value at T_g
    (_ratio_above, from the same pass's sums of (y - T_g)_+ and its
    squares) where sqrt(n) stopped short of tau, and the whole matrix fell
    back to the row kernel.  Gaussian columns, G of P = 784 of 300, 300 of
    784 and 512 of 4608, float64 and float32, a = 0.3 sqrt(P), without
    hints: b = 1/P 0.38-0.68x the time; b = 10/P still falls back after the
    rounds (the bound creeps up: 4-8 candidates), 1.04-1.19x the time, the
    squares costing more in the search's passes.  FT, QT: the scratch of
    those sums (G entries), None for the exclusive lasso: one call of the
    pass serves both operators (a test of D2 would compile the exclusive
    lasso's pass for group+exclusive too: numba prunes a branch by an
    argument only where it is None)."""
    P, G = A.shape
    mb = np.full(G, _inf_magnitude_bits(A[0, 0]))
    S = np.empty(G, dtype=np.float64)
    n = np.empty(G, dtype=np.int64)
    # each column's sum, count and least magnitude of the entries >= Y_g, for
    # the float32 shortcut: the first pass's, then those of the round that
    # last set Y_g (a column decided in an earlier round keeps them)
    S_y, n_y, mb_y = S1.copy(), nz1.copy(), mb1.copy()
    for rnd in range(_COL_SEARCH_ROUNDS):
        # (group+exclusive: with the sums of (y - T_g)_+ and of its squares,
        # whose ratio bounds F/sqrt(Q) above T_g, _ratio_above, for the next bound)
        _col_pass1(A, S, None, mb, None, n, T, FT, QT)
        for g in range(G):
            if T[g] < np.inf:
                y = _magnitude_of_bits(mb[g])
                Y[g] = y if y < np.inf else -1.0
                S_y[g], n_y[g], mb_y[g] = S[g], n[g], mb[g]
        _support_sums(A, Y, S_y, mb_y, xb, n_y, F, D2, k)
        again = False
        for g in range(G):
            if T[g] < np.inf:
                ag = np.float64(a[g]) if D2 is not None else 0.0
                br = np.float64(b[g])
                if Y[g] > 0.0 and _phi(Y[g], F[g], D2[g] if D2 is not None else 0.0, ag, br) > 0.0:
                    T[g] = np.inf  # decided
                    continue
                r = _ratio_above(FT[g], QT[g], n[g], P) if FT is not None else math.sqrt(np.float64(n[g]))
                t = _tau_below_at(S[g], n[g], P, ag, br, r) if n[g] > 0 else 0.0
                if rnd + 1 < _COL_SEARCH_ROUNDS and t > T[g]:
                    T[g] = t
                    again = True
                else:
                    T[g] = np.inf  # (no progress: the row kernel)
        if not again:
            return


@_jit
def _col_support_out(A, Y, e, fac, out):
    """out_ig = sign(A_ig) ((|A_ig| - Y_g) + e_g) fac_g on |A_ig| >= Y_g, else
    sign(A_ig) 0 (_support_one per column, fac_g > 0; fac None: every
    fac_g = 1, no product); in place when out is A, then four rows per read
    of the column's parameters.  Where every e_g >= +0 (checked: the
    exclusive lasso's always are, group+exclusive's in practice), the test
    u > 0 is implied and dropped (_lean_magnitude, the same bits)."""
    lean = True
    for g in range(e.shape[0]):
        lean &= e[g] >= 0.0
    if fac is None:  # (numba prunes the branch by fac's type)
        if lean:
            _col_support_out_loops(A, Y, e, Y, out, _support_unit_at)
        else:
            _col_support_out_loops(A, Y, e, np.ones(e.shape[0]), out, _support_one_at)
    elif lean:
        _col_support_out_loops(A, Y, e, fac, out, _support_lean_at)
    else:
        _col_support_out_loops(A, Y, e, fac, out, _support_one_at)


@_inline
def _support_one_at(xj, yg, eg, fg):
    return _support_one(xj, 1.0, 1.0, yg, eg, fg)


@_inline
def _support_unit_at(xj, yg, eg, fg):
    """_support_one(xj, 1, 1, yg, eg, 1) for eg >= +0 (fg not read)."""
    x = np.float64(xj)
    return _with_sign_of(_lean_magnitude(abs(x), yg, eg), x)


@_inline
def _support_lean_at(xj, yg, eg, fg):
    """_support_one(xj, 1, 1, yg, eg, fg) for eg >= +0 and fg > 0."""
    x = np.float64(xj)
    return _with_sign_of(_lean_magnitude(abs(x), yg, eg) * fg, x)


@_inline
def _col_support_out_loops(A, Y, e, fac, out, one):
    P, G = A.shape
    if A.ctypes.data == out.ctypes.data:
        i = 0
        while i + 4 <= P:
            r0, r1, r2, r3 = out[i], out[i + 1], out[i + 2], out[i + 3]
            for g in range(G):
                yg, eg, fg = Y[g], e[g], fac[g]
                r0[g] = one(r0[g], yg, eg, fg)
                r1[g] = one(r1[g], yg, eg, fg)
                r2[g] = one(r2[g], yg, eg, fg)
                r3[g] = one(r3[g], yg, eg, fg)
            i += 4
        for i in range(i, P):
            row = out[i]
            for g in range(G):
                row[g] = one(row[g], Y[g], e[g], fac[g])
    else:
        for i in range(P):
            row = A[i]
            orow = out[i]
            for g in range(G):
                orow[g] = one(row[g], Y[g], e[g], fac[g])


@_jit
def _support_sums(A, Y, S, mb, xb, nz, F, D2, k):
    """The support sums F, D2 (None: the exclusive lasso's, without) and k
    at Y_g of every column (_col_support_sums at Y_g floored at 0), given
    a pass's sums S, least magnitudes' bits mb and counts nz of the entries
    above some T_g, of which Y_g is the least (Y_g <= 0: a column whose
    sums do not matter), and the columns' largest magnitudes' bits xb
    (None: no shortcut).  float32 A: F and k from those sums where they
    are exact (_support_sums_from_pass1), and then D2 alone from a pass
    (none for the exclusive lasso; the pass without F and k takes 0.75x
    the time at 300 x 784); otherwise one pass of all three."""
    if xb is not None and _is_float32(A[0, 0]) and _support_sums_from_pass1(S, Y, mb, xb, nz, A.shape[0], F, k):
        if D2 is not None:
            _col_support_sums(A, np.maximum(Y, 0.0), None, D2, None)
        return
    _col_support_sums(A, np.maximum(Y, 0.0), F, D2, k)


@_jit
def _support_sums_or_shifted(A, Y, S, mb, xb, nz, F, D2, k, shifted, T, F1, Q1):
    """The support sums at Y (D2 and Q1 None: the exclusive lasso's): from
    the first pass's shifted sums where ``shifted`` and
    _shifted_support_sums accepts them, else by _support_sums.  F1 None:
    no shifted sums (the float32 exclusive lasso), and
    _shifted_support_sums is not compiled."""
    if not (F1 is not None and shifted and _shifted_support_sums(Y, T, F1, Q1, nz, F, D2, k)):
        _support_sums(A, Y, S, mb, xb, nz, F, D2, k)


@_jit
def _shifted_support_sums(Y, T, F1, Q1, nz, F, D2, k):
    """The support sums F_g = sum (y - Y_g), D2_g = sum (y - Y_g)^2 (D2
    None: the exclusive lasso's, without) and k_g over {y >= Y_g} = {y > T_g}
    (Y_g > 0, the least magnitude above T_g), without a pass, from the first
    pass's sums over the same entries shifted by T_g (_col_pass1: F1_g =
    sum (y - T_g), Q1_g = sum (y - T_g)^2, nz_g their number): with
    d = Y_g - T_g > 0,

        F_g = F1_g - k_g d,    D2_g = Q1_g - d (F1_g + F_g),    k_g = nz_g.

    Where d is large against the support's spread above Y_g, those
    differences cancel: they are taken only where 3 k_g d <= F1_g and
    3 d (F1_g + F_g) <= Q1_g, i.e. where F1_g + k_g d <= 2 F_g and
    Q1_g + d (F1_g + F_g) <= 2 D2_g, so that their rounding errors (a few
    units of the terms' sums, as those of the direct sums of
    _col_support_sums, which add the P terms in another order) are at most
    about twice those of the direct sums.  Returns False, and the caller
    takes the pass, where some column with Y_g > 0 fails that (a column of
    one support entry does not: its sums are 0, exactly).  The columns with
    Y_g <= 0 (no candidate: their sums are not read) get F_g = D2_g = 0,
    k_g = 0.  In training, with the previous
    step's hints, every column passes: the pass of the support sums is
    saved (the MLP's float64 300 x 784 layer in training: 0.81-0.84x the
    time of the exclusive lasso's column passes, 0.83-0.90x
    group+exclusive's; ``benchmarks/ab_columns.py --dtype float64``).
    float32 group+exclusive takes it at T = 0 on its first pass's plain
    sums, F1 = S and Q1 = Q over {y > H_g} (the bits pass sums no shifted
    ones; F = S - k Y is then the exact F of _support_sums_from_pass1
    where the sums are exact, and d = Y_g is small against the support in
    training: 0.83x the time of its column passes, the D2 pass saved,
    ``benchmarks/ab_columns.py``)."""
    for g in range(Y.shape[0]):
        F[g] = 0.0
        k[g] = 0
        if D2 is not None:
            D2[g] = 0.0
        if Y[g] > 0.0 and nz[g] == 1:  # (the support is Y_g alone: F_g = D2_g = 0)
            k[g] = 1
        elif Y[g] > 0.0:
            n = np.float64(nz[g])
            if D2 is not None:
                Fg, D2[g], okF, okD = _unshifted_sums(Y[g] - T[g], n, F1[g], Q1[g])
                ok = okF & okD
            else:  # (Q1 None: no D2)
                Fg, _, ok, _ = _unshifted_sums(Y[g] - T[g], n, F1[g], 0.0)
            if not ok:
                return False
            F[g] = Fg
            k[g] = nz[g]
    return True


@_inline
def _unshifted_sums(d, n, F1, Q1):
    """(F, D2, okF, okD): the sums F = sum (y - Y), D2 = sum (y - Y)^2 over
    n entries y >= Y from their sums shifted by T = Y - d, F1 = sum (y - T)
    and Q1 = sum (y - T)^2: F = F1 - n d, D2 = Q1 - d (F1 + F); okF and okD
    say that neither cancels more than a third (3 n d <= F1, d > 0;
    3 d (F1 + F) <= Q1), so that their errors stay within about twice the
    direct sums' (see _shifted_support_sums)."""
    F = F1 - n * d
    D2 = Q1 - d * (F1 + F)
    return F, D2, (3.0 * n * d <= F1) & (d > 0.0), 3.0 * d * (F1 + F) <= Q1


@_jit
def _gx_support_sums(src, n, g1, g2, Y, t, Ft, Qt, kt):
    """(F, D2, k) of the support {y >= Y} over y = (|src_j| g1) g2, j < n,
    where Y = min{y > t} and Ft = F(t), Qt = Q(t), kt = k(t) are the sums
    over {y > t}, the same entries (a search's lower point t, or t = 0 and
    the first pass's sums): from those, where they cancel little
    (_unshifted_sums; kt = 1: F = D2 = 0 exactly), else by a pass
    (_gx_sums).  In a training step (the fast path, Y the least nonzero
    magnitude, small) and after a search (Y just above t) they are
    taken: one pass fewer a row."""
    if kt == 1:
        return 0.0, 0.0, 1
    F, D2, okF, okD = _unshifted_sums(Y - t, np.float64(kt), Ft, Qt)
    if okF and okD:
        return F, D2, kt
    return _gx_sums(src, n, g1, g2, Y)


@_jit
def _support_sums_from_pass1(S, Y, mb, xb, nz, P, F, k):
    """The exclusive lasso's support sums on float32 columns without a
    second pass, where they are exact: F_g = S_g - k_g Y_g and k_g = nz_g
    for the columns of the fast path (Y_g = the least nonzero magnitude),
    F_g = S_g and k_g = P for the others (Y_g <= 0: every entry, as
    _col_support_sums gives them with Y_g floored at 0).  Returns False,
    having changed nothing that matters, if some fast column is not exact.

    Exact: every nonzero |y| of a column is a float32 multiple of
    u = ulp(Y_g) (a larger float has a coarser ulp) below 2^(E_max + 1), so
    y - Y_g, every partial sum of either sum (non-negative terms: each at
    most P max|y|) and k_g Y_g are multiples of u below 2^53 u as long as
    E_max - E_min + 24 + ceil(log2 P) <= 53 (E: the binary exponents of the
    column's largest and least nonzero magnitude, subnormals counted as
    -126).  Then S_g, k_g Y_g and S_g - k_g Y_g are exact in float64 and
    equal the exact sum of (y - Y_g)_+, which is what _col_support_sums
    computes (also exactly, under the same condition): the same bits."""
    span = 29 - int(math.ceil(math.log2(max(P, 1))))
    for g in range(S.shape[0]):
        if Y[g] > 0.0:
            emax = max(np.int64(xb[g]) >> 23, 1)
            emin = max(np.int64(mb[g]) >> 23, 1)
            if emax - emin > span:
                return False
    for g in range(S.shape[0]):
        if Y[g] > 0.0:
            k[g] = nz[g]
            F[g] = S[g] - np.float64(nz[g]) * Y[g]
        else:
            k[g] = P
            F[g] = S[g]
    return True


_SHIFTED_MIN_ROWS = 64  # shorter columns take no shifted sums (_exclusive_cols)

# _exclusive_cols' H for a call without hints (never written)
_NO_HINTS = np.empty(0, dtype=np.float64)

# The next call's hint: this fraction of the threshold found.  Measured on the
# MLP benchmark's 784 columns in training (float32 exclusive lasso): every
# hint up to 0.995 tau proved itself; the candidates above it failed on 95
# columns at 0.9, 38 at 0.95, 7 at 0.995 (an entry between the hint and the
# new threshold); at 1.0 none proved itself (the threshold moves by ulps).
_HINT_FRACTION = 1.0 - 2.0**-8


def _exclusive_cols(A, a, b, out, H):
    """The exclusive lasso (``a`` None) or group+exclusive on every
    column of A (float32 or float64): the compiled kernel of that operator
    and dtype (_EXCLUSIVE_COLS, made by _make_exclusive_cols)."""
    return _EXCLUSIVE_COLS[a is not None, A.itemsize == 8](A, a, b, out, H)


def _make_exclusive_cols(gx: bool, f64: bool):
    """The compiled column kernel of one operator (``gx``: group+exclusive,
    else the exclusive lasso) and dtype (``f64``: float64, else float32):
    a closure whose constants ``gx`` and ``f64`` numba prunes by before
    typing (see the comment at its top; Numba caches each closure apart,
    keyed by their values)."""

    @_jit
    def _exclusive_cols_kernel(A, a, b, out, H):
        """The exclusive lasso (``gx`` False, ``a`` None) or group+exclusive on every
        column of A, in memory order, for the columns with unscaled sums and
        b in (0, 2^54) resp. (0, inf), ||w|| > a > 0: where the support is every
        nonzero entry (phi(min{y > 0}) > 0, the fast path of _exclusive_core,
        _group_exclusive_core) or the entries above a candidate found by
        _exclusive_col_search; three or four passes over A (one more per extra
        search round).  Group+exclusive columns with ||w|| <= a (the sums over
        the whole column, in the row kernel's unscaled range: its rule) are
        zeroed here.  The other columns are gathered into rows and solved by
        the row kernel.  Returns 0, having written nothing, when more than a
        quarter of the columns need that (the caller then solves the whole
        matrix as rows); else 1, or 2 where a column held NaN or Inf.

        ``H`` (float64, read and overwritten): hints, one per column, a guess
        of each column's threshold tau_g (0, NaN, < 0, inf: none); or none at
        all, an empty H (:data:`_NO_HINTS`: one type for both, so that a
        signature compiles one kernel for calls with and without hints).  The
        first pass then sums the magnitudes above H_g instead of above 0; where
        that proves phi(H_g) <= 0 (H_g <= _tau_below of those sums: every
        y <= H_g is off the support), the least magnitude above H_g is the
        column's candidate, tested as the others (phi(Y) > 0 on its support
        sums).  A hint that proves nothing is dropped and the first pass runs
        again (one more pass).  A candidate that fails joins the search, from
        the higher bound of its sums above H_g, when the search runs anyway,
        when the support sums cost no pass (float32 exclusive lasso), or when
        more than 1/16 of the columns fail; else the row kernel takes it.  In
        training the thresholds move little between steps: with the hints of
        the previous step every column is decided without the search's
        candidate pass, and in two passes, first and output, where the
        support sums need none: the float32 exclusive lasso (its sums exact),
        float64 (the first pass's sums shifted by the hints,
        _shifted_support_sums), float32 group+exclusive (the first pass's
        plain sums, its squares included: F exact, D2 = Q - Y (S + F); the
        same function at T = 0).  The support never depends on the hints,
        the values only through which route (column passes or row kernel) a
        column takes and how the support sums are summed: float32 the same
        bits where the sums are exact (the support's magnitudes within about
        2^(29 - log2 P) of its least, as in training;
        _support_sums_from_pass1, _float32_sums_exact), except
        group+exclusive on columns of _SHIFTED_MIN_ROWS or more entries (its
        D2 from other sums); else, as float64, within the rounding of the
        sums.  On return H_g = _HINT_FRACTION tau_g for the
        columns solved here, 0 for the zero columns; a column the row kernel
        took keeps its hint.
        """
        P, G = A.shape
        # ``gx`` (the operator) and ``f64`` (A's dtype) are constants of each
        # compiled kernel (_EXCLUSIVE_COLS): numba prunes the branches they rule
        # out (``gx and ...``, ``... if gx else ...``, ``f64 and ...``) before
        # typing, so that a kernel compiles neither the other operator's
        # callees nor, for float32, the shifted sums' (a first call of the
        # float64 exclusive lasso here took 47 s with both operators, on the
        # 2-core Zen 1).  A test on an argument (``a is not None``) would not
        # do: numba prunes by it only where the argument is None
        hinted = H.shape[0] != 0
        H = H if hinted else np.zeros(G)  # (no hints: the passes run above 0)
        S = np.empty(G, dtype=np.float64)
        Q = np.empty(G, dtype=np.float64)
        mb = np.full(G, _inf_magnitude_bits(A[0, 0]))  # (A's width)
        xb = np.zeros(G, dtype=mb.dtype)
        nz = np.zeros(G, dtype=np.int64)
        Y = np.empty(G, dtype=np.float64)
        zeroed = np.zeros(G, dtype=np.bool_)  # (group+exclusive) columns with ||w|| <= a: written 0 here
        from_hint = np.zeros(G, dtype=np.bool_)
        # group+exclusive with a hint on every column (a training step's, until
        # the group part zeroes a column): the first pass needs no squares for
        # the norms (float64 sums none; float32 sums them above the hints for
        # its support sums, see ``shifted``).  They
        # only decide ||w|| > a, and a hint that proves itself proves that too:
        # it is below _tau_below's bound, which is positive only where the sum
        # S of the n magnitudes above the hint exceeds a sqrt(n) (S lowered and
        # a sqrt(n) raised by their rounding), and ||w|| >= S/sqrt(n) (Cauchy-
        # Schwarz).  A column whose hint proves nothing drops it, and the pass
        # that runs again sums the squares
        lazy_norms = gx and hinted
        if hinted:
            for g in range(G):
                if not (H[g] > 0.0 and H[g] < np.inf):  # (NaN, negative, inf: no hint)
                    H[g] = 0.0
                    lazy_norms = False
        # ``shifted``: with hints, the support sums come from the first pass's
        # sums F1, Q1 shifted by Tp, where they are well conditioned
        # (_shifted_support_sums), without a pass of their own.  float64: the
        # first pass also sums the magnitudes above the hints shifted by them
        # (Tp, the hints it ran with; in training, every column of the MLP's
        # 300 x 784 layer).  float32 group+exclusive: it sums the squares of
        # the magnitudes above the hints too (their norms stay lazy), and its
        # plain sums S, Q are taken at Tp = 0 (F = S - k Y, exact where
        # _float32_sums_exact; D2 = Q - Y (S + F), where that cancels little:
        # in training Y is small against the support's magnitudes; the
        # squares cost less than the pass of D2 they save).  The float32
        # exclusive lasso keeps its exact sums and the bits they give.
        # Columns shorter than _SHIFTED_MIN_ROWS do not: their supports
        # are a few entries, where the test refuses the sums more often (every
        # step on the MLP's 10 x 300 layer: the shifted sums cost 1.13x the time
        # there), and the pass they would save is short
        shifted = (f64 or gx) and hinted and P >= _SHIFTED_MIN_ROWS
        ns = G if shifted else 0  # (their scratch: none where not used)
        Tp = np.zeros(ns)
        if f64:
            F1, Q1 = np.empty(ns), np.empty(ns)
        elif gx:  # (float32: the plain sums, at Tp = 0)
            F1, Q1 = S, Q
        else:  # (None: the callees' shifted sums are pruned before typing)
            F1 = Q1 = None
        for attempt in range(2):
            # the first pass, over the magnitudes above the hints (H_g = 0: all);
            # xb_g = 0 marks the zero columns (whose prox is 0: no row kernel; a
            # hint there proves nothing but costs no pass again: it is cleared, as
            # the sums above it are those above 0.  The group lasso part zeroes
            # columns, and in training they stay zero)
            lazy_norms = lazy_norms and attempt == 0
            if f64 and shifted:
                _copy_row(H, Tp)
            # (one call per variant: an argument ``x if c else None`` would be
            # typed Optional, see _optional_typed_variants in the tests)
            if f64 and gx and not lazy_norms and shifted:
                _col_pass1(A, S, Q, mb, xb, nz, H, F1, Q1)
            elif f64 and gx and shifted:  # (lazy norms)
                _col_pass1(A, S, None, mb, xb, nz, H, F1, Q1)
            elif gx and (not lazy_norms or shifted):  # (float32 with shifted: the squares for its sums)
                _col_pass1(A, S, Q, mb, xb, nz, H)
            elif f64 and shifted:  # (the exclusive lasso needs no ||w||, nor the squares)
                _col_pass1(A, S, None, mb, xb, nz, H, F1, None)
            else:
                _col_pass1(A, S, None, mb, xb, nz, H)
            lim = 2.0**400 if gx else 2.0**500
            for g in range(G):
                ymin = _magnitude_of_bits(mb[g])
                br = np.float64(b[g])
                in_range = S[g] > 0.0 and S[g] <= lim and S[g] >= P / lim and ymin < np.inf
                ok = in_range and br > 0.0
                zeroed[g] = False
                if gx:
                    ag = np.float64(a[g])
                    ok = ok and br < np.inf and ag > 0.0 and (lazy_norms or math.sqrt(Q[g]) > ag)
                    # ||w|| <= a: the group part zeroes the column, decided as the
                    # row kernel decides it (unscaled in this range: sqrt of the
                    # plain sum of squares, not > a), from the sums over the whole
                    # column (no hint).  In training such columns come back from
                    # zero, tiny, every step: they no longer go to the row kernel
                    zeroed[g] = in_range and br >= 0.0 and ag > 0.0 and not lazy_norms and not math.sqrt(Q[g]) > ag and H[g] == 0.0
                else:
                    ok = ok and br < _HUGE_B
                Y[g] = ymin if ok else -1.0  # -1: a column for the row kernel (or zeroed)
            if not hinted:
                break
            # a hint H_g > 0 proves phi(H_g) <= 0 if H_g <= _tau_below of the sums
            # above it: then every y <= H_g is off the support, and the least
            # magnitude above it, Y_g, is the column's candidate.  A hint that
            # proves nothing (or whose column's sums above it are out of range,
            # or, group+exclusive, whose norm above it is not above a) is
            # dropped, and the pass runs again over the whole column
            # (without branches: a loop in SIMD lanes)
            ndropped = 0
            for g in range(G):
                h = H[g]
                ag = np.float64(a[g]) if gx else 0.0
                proves = (Y[g] > 0.0) & (h <= _tau_below(S[g], nz[g], P, ag, np.float64(b[g])))
                # a zero column: no threshold to guess (its sums above 0 are
                # those above H_g: no pass again)
                live = (h > 0.0) & (xb[g] != 0)
                from_hint[g] = live & proves
                H[g] = h if live & proves else 0.0
                ndropped += 1 if live & ~proves else 0
            if ndropped == 0:
                break
        # The columns whose least magnitude is not above a lower bound of tau
        # take the candidate search (_exclusive_col_search)
        T = np.full(G, np.inf)
        searched = False
        for g in range(G):
            if Y[g] > 0.0 and not from_hint[g]:
                # (group+exclusive: Q_g is summed where the norms are not lazy, over
                # the same magnitudes above 0 as S_g: F(0) = S_g, Q(0) = Q_g)
                r = _ratio_above(S[g], Q[g], nz[g], P) if gx and not lazy_norms else math.sqrt(np.float64(nz[g]))
                t0 = _tau_below_at(S[g], nz[g], P, np.float64(a[g]) if gx else 0.0, np.float64(b[g]), r)
                if not Y[g] > t0:
                    T[g] = t0
                    searched = True
        F = np.empty(G, dtype=np.float64)
        D2 = np.zeros(G, dtype=np.float64)  # (phi of the exclusive lasso reads no D2: it stays 0)
        k = np.empty(G, dtype=np.int64)
        sums_done = False
        if from_hint.any():
            exact_now = False
            # (the float32 exclusive lasso's exact sums: a test of the constants,
            # which prunes the call from the other kernels)
            if not gx and not f64:
                exact_now = _support_sums_from_pass1(S, Y, mb, xb, nz, P, F, k)
            if exact_now or not searched:
                # the hinted candidates are tested now: at no pass (float32
                # exclusive lasso) or with the support sums' pass that follows
                # anyway when no column searches
                # (two calls: ``D2 if gx else None`` would type D2 Optional, and
                # the per-element test of it stops the pass vectorising: 14x
                # slower, measured on float64 300 x 784 in training)
                if gx:  # (exact_now is False: the exclusive lasso's alone)
                    _support_sums_or_shifted(A, Y, S, mb, xb, nz, F, D2, k, shifted, Tp, F1, Q1)
                elif not exact_now:
                    _support_sums_or_shifted(A, Y, S, mb, xb, nz, F, None, k, shifted, Tp, F1, None)
                failed = np.empty(G, dtype=np.bool_)
                nfail = 0
                for g in range(G):  # (SIMD lanes)
                    phi = _phi_lane(Y[g], F[g], D2[g], np.float64(a[g]) if gx else 0.0, np.float64(b[g]))
                    failed[g] = from_hint[g] & ~(phi > 0.0)
                    nfail += 1 if failed[g] else 0
                if nfail and (searched or 16 * nfail > G):
                    # they join the search (when it runs anyway, or they are many)
                    # from the higher bound of their sums above H_g; a few are
                    # left to the row kernel, cheaper than the search's passes
                    if hinted:
                        for g in range(G):
                            if failed[g]:
                                T[g] = max(H[g], _tau_below(S[g], nz[g], P, np.float64(a[g]) if gx else 0.0, np.float64(b[g])))
                    searched = True
                sums_done = not searched
            elif hinted:  # a search runs anyway: the hinted columns join it, from H_g
                for g in range(G):
                    if from_hint[g]:
                        T[g] = H[g]
        if searched:
            if gx:
                _exclusive_col_search(A, a, b, Y, T, F, D2, k, S, nz, mb, xb, np.empty(G), np.empty(G))
            else:
                _exclusive_col_search(A, b, b, Y, T, F, None, k, S, nz, mb, xb, None, None)
        elif sums_done:
            pass
        elif gx:
            _support_sums_or_shifted(A, Y, S, mb, xb, nz, F, D2, k, shifted, Tp, F1, Q1)
        else:
            _support_sums_or_shifted(A, Y, S, mb, xb, nz, F, None, k, shifted, Tp, F1, None)
        e = np.empty(G, dtype=np.float64)
        fac = np.ones(G, dtype=np.float64)
        nslow = 0
        nfast = 0
        fast = np.empty(G, dtype=np.int64)  # the columns solved here
        candidate = np.empty(G, dtype=np.bool_)
        for g in range(G):  # (SIMD lanes)
            phi = _phi_lane(Y[g], F[g], D2[g], np.float64(a[g]) if gx else 0.0, np.float64(b[g]))
            candidate[g] = (Y[g] > 0.0) & (phi > 0.0)
        for g in range(G):
            if xb[g] == 0 or zeroed[g]:  # a zero column, or one the group part zeroes: written as sign 0 below
                Y[g] = np.inf  # (its own signed zeros, as the row kernel copies a zero column and zeroes the other)
                e[g] = 0.0
            elif candidate[g]:
                fast[nfast] = g
                nfast += 1
            else:
                Y[g] = np.inf  # written as sign 0 below, then overwritten
                e[g] = 0.0
                nslow += 1
        if 4 * nslow > G:
            return 0
        if gx:  # fac_g = c_g, the group lasso's shrink factor (all columns' Newton steps at once)
            _group_exclusive_shrinks(a, b, Y, k, F, D2, fast[:nfast], fac)
        for g in range(G):  # (SIMD lanes: the columns solved here are those with Y_g < inf)
            beta = np.float64(b[g]) * fac[g] if gx else np.float64(b[g])
            e_g = (Y[g] - beta * F[g]) / (1.0 + beta * k[g])
            e[g] = e_g if Y[g] < np.inf else e[g]
        if hinted:  # the next call's hints (a column the row kernel takes keeps its own)
            for g in range(G):
                if 0.0 < Y[g] < np.inf:
                    H[g] = _HINT_FRACTION * (Y[g] - e[g])
        slow = np.empty((nslow, P), dtype=A.dtype)
        buf = np.empty(P, dtype=np.float64)
        finite = True  # (a column with NaN or Inf has a non-finite sum: the row kernel takes it)
        r = 0
        for g in range(G):
            if Y[g] == np.inf and xb[g] != 0 and not zeroed[g]:
                for i in range(P):
                    slow[r, i] = A[i, g]
                if gx:
                    finite &= _group_exclusive_row(slow[r], np.float64(a[g]), np.float64(b[g]), slow[r], buf)
                else:
                    finite &= _exclusive_row(slow[r], np.float64(b[g]), slow[r], buf)
                r += 1
        # (the exclusive lasso: fac_g = 1, and e_g > 0 on the columns solved
        # here, as Y_g - b F_g > 0 is the test phi(Y_g) > 0 passed; 0 on the others)
        if gx:  # (two calls: ``fac if gx else None`` would type fac Optional)
            _col_support_out(A, Y, e, fac, out)
        else:
            _col_support_out(A, Y, e, None, out)
        r = 0
        for g in range(G):
            if Y[g] == np.inf and xb[g] != 0 and not zeroed[g]:
                for i in range(P):
                    out[i, g] = slow[r, i]
                r += 1
        return 1 if finite else 2

    return _exclusive_cols_kernel

# One compiled kernel per operator and dtype
_EXCLUSIVE_COLS = {(gx, f64): _make_exclusive_cols(gx, f64) for gx in (False, True) for f64 in (False, True)}


def _check_hint(hint, W):
    """``hint`` for the exclusive operators' column passes (_exclusive_cols):
    None, or a float64 array of one entry per row of W (C-contiguous,
    writeable) that a caller keeps between calls on the same tensor, e.g. a
    training step's; the kernel reads it as a guess of each row's threshold
    and leaves in it the guess for the next call.  It never changes the
    support, only how many passes finding it takes and, within the rounding
    of the support's sums, the last bits (in float64, in float32
    group+exclusive on columns of _SHIFTED_MIN_ROWS or more entries, and in
    a float32 column whose support spans more than about 2^29: see
    _exclusive_cols)."""
    if hint is None:
        return None
    if not (isinstance(hint, np.ndarray) and hint.dtype == np.float64 and hint.shape == (W.shape[0],)
            and hint.flags.c_contiguous and hint.flags.writeable):
        raise ValueError(f"hint must be a writeable C-contiguous float64 array of shape ({W.shape[0]},)")
    return hint


def _rows_in_order(kernel_seq, W, out, *thresholds):
    """``kernel_seq`` on F-contiguous rows: copied into a C-contiguous
    scratch, solved there in place, copied back into out (two layout-changing
    copies by NumPy, 0.13 and 0.19 ms at 784 x 300 float32 against 0.24 and
    0.28 ms for a tiled Numba transpose, instead of strided row passes).
    Returns the kernel's flag: whether every row was finite."""
    R = np.empty(W.shape, dtype=W.dtype)
    R[...] = W
    finite = kernel_seq(R, *thresholds, R)
    out[...] = R
    return finite


def exclusive_lasso(W, b, check_finite=False, *, parallel=True, out=None, hint=None):
    """x_r = sign(w_r) (|w_r| - tau_r)_+ with the exact exclusive threshold
    (into ``out``, which may be ``W``, or a new array).  ``hint``: see
    :func:`_check_hint` (used where the rows are columns).  check_finite:
    :class:`NonFiniteInput` if W holds NaN or Inf, from the first pass's row
    sums (no pass of its own; in place, a check before writing)."""
    return _exclusive_operator(W, b, b, False, check_finite, parallel, out, hint)


def _exclusive_operator(W, a, b, gx, check_finite, parallel, out, hint):
    """exclusive_lasso (gx False: ``a`` is not read) or group_exclusive (gx
    True) into ``out`` (or a new array)."""
    out = _result(W, out)
    if W.size:
        _exclusive_route(W, out, parallel, hint, gx)((a, b) if gx else (b,), check_finite)
    return out


def _exclusive_route(W, out, parallel, hint=None, gx=False):
    """The call of an exclusive operator for W -> out (W.size > 0) by route,
    chosen now: the column passes where the rows are columns (the whole
    matrix as rows when they give up), else the row kernels; then the fused
    check's verdict.  ``run((b,), check_finite)`` (exclusive lasso) or
    ``run((a, b), check_finite)`` (gx); see :func:`serial_in_place`."""
    seq, par = (_group_exclusive_seq, _group_exclusive_par) if gx else (_exclusive_seq, _exclusive_par)
    cols = _as_columns(W, out)
    hint = _check_hint(hint, W) if cols else None
    A, O = (W.T, out.T) if cols else (W, out)
    par = par if not cols and parallel and _parallel(W) else None
    in_place = np.shares_memory(W, out)  # (once: 20 us a call on a cold cache)

    def run(thr, check_finite):
        check_finite = _check_first(A, in_place, check_finite)
        if cols:
            code = _exclusive_cols(A, thr[0] if gx else None, thr[-1], O, _NO_HINTS if hint is None else hint)
            finite = code == 1 if code else _rows_in_order(seq, W, out, *thr)
        elif par is not None:
            finite = par(W, *thr, out, _group_exclusive_chunks(*W.shape) if gx else _chunks(W.shape[0]))
        else:
            finite = seq(W, *thr, out)
        if check_finite and not finite:
            raise NonFiniteInput("input contains NaN or Inf")

    return run


def _check_first(A, in_place: bool, check_finite: bool) -> bool:
    """The fused check of the exclusive operators writing in place (``A``
    the data, in place when ``in_place``): A is checked before anything is
    written (raises; one compiled read, :func:`_finite_2d`, where NumPy's
    sum took 100-140 us on the MLP's 784 x 300 float32 layer after a
    training step), and the kernel need not check."""
    if check_finite and in_place:
        _check_norms(_finite_2d(A))
        return False
    return check_finite


@_jit
def _finite_2d(A):
    """Whether every entry of the 2-D A is finite: the largest magnitude's
    bits (_magnitude_bits, A's width; a NaN's are above inf's) below inf's.
    An integer maximum, which LLVM vectorises; one read, in memory order
    when A is C-contiguous.  True for an empty A."""
    if A.shape[0] == 0 or A.shape[1] == 0:
        return True
    top = _magnitude_bits(A[0, 0])
    for i in range(A.shape[0]):
        row = A[i]
        for j in range(A.shape[1]):
            top = max(top, _magnitude_bits(row[j]))
    return top < _inf_magnitude_bits(A[0, 0])


# ------------------------------------------------------------------ group + exclusive


@_inline
def _geometric_middle(left, right):
    """sqrt(left right) while right > 4 left (left floored at the smallest
    subnormal), else (left + right)/2."""
    if right > 4.0 * left:
        return math.sqrt(max(left, 5e-324)) * math.sqrt(right)
    return 0.5 * (left + right)


@_jit
def _shrink_start(a, b, r, k, F, D2):
    """Where _group_exclusive_shrink starts: c1 = 1 - a/||u(b)||, one
    fixed-point step from c = 1 (g(c) = c - 1 + a/||u(b c)||), which is the
    root to first order when b is small against 1/||w|| (the case of a
    training step: then Newton ends in a step or two); the bracket's
    geometric middle when c1 is not inside (0, 1)."""
    return _shrink_start_at(a, b, r, np.float64(k), F, D2, _geometric_middle(0.0, 1.0))


@_inline
def _shrink_start_at(a, b, r, kf, F, D2, middle):
    """_shrink_start with k as a float and the middle of (0, 1) given:
    without branches, so that a loop over many columns vectorises."""
    e = (r - b * F) / (1.0 + b * kf)
    N = math.sqrt(D2 + 2.0 * e * F + kf * e * e)
    c = 1.0 - a / N
    return c if (c > 0.0) & (c < 1.0) else middle


@_jit
def _group_exclusive_shrink(a, b, r, k, F, D2):
    """Root c of g(c) = c - 1 + a/||u(b c)|| with the support S of u fixed (the
    reference's group_exclusive_shrink, step 2), by Newton's method
    safeguarded by bisection until the bracket cannot shrink.

    With r = Y_k the smallest entry of S (k entries), F = sum_S (y - r),
    D2 = sum_S (y - r)^2, S_r = F + k r: u(beta) = (y - r) + e,
    e = (r - beta F)/(1 + beta k) (= r - tau(beta) >= 0 where r is in the
    support: no cancellation), ||u||^2 = D2 + 2 e F + k e^2 and
    g'(c) = 1 + a b (F + k e) S_r / (||u||^3 (1 + b c k)^2).  This fixed-support
    g is increasing on all of [0, 1] (its threshold b c S_r/(1 + b c k) stays
    below the mean of S, so ||u|| decreases) and equals the true g at its root,
    so [0, 1] brackets the root without the support's breakpoints.

    The root is about a/(b ||w||) (scaled), 2^-900 for the largest b that
    proxlib passes (larger ones are solved by saturation, proxlib._range):
    while the bracket spans more than a factor 4 its geometric middle is
    taken (halving [0, 1] would take ~900 steps to get there), from a floor
    of the smallest subnormal when the left end is 0.  It stops once the
    Newton correction is below half a unit of c (the slope is >= 1, so
    |g| < ulp(c)), as the reference's group_exclusive_factor does."""
    kf = np.float64(k)
    Sr = F + kf * r
    left = 0.0
    right = 1.0
    c = _shrink_start(a, b, r, k, F, D2)
    for _ in range(_MAX_ROOT_ITER):
        c, left, right, done = _shrink_step(a, b, r, kf, F, D2, Sr, c, left, right)
        if done:
            break
    return c


@_inline
def _shrink_step(a, b, r, kf, F, D2, Sr, c, left, right):
    """One step of _group_exclusive_shrink from c in the bracket
    (left, right): (the next c, the new bracket, whether c is the root:
    then the next c is c).  Without branches (every case is a selection)."""
    newton, left, right, settled = _shrink_newton(a, b, r, kf, F, D2, Sr, c, left, right)
    nxt = newton if (newton > left) & (newton < right) else _geometric_middle(left, right)
    # a bracket that cannot shrink
    done = settled | ~((left < nxt) & (nxt < right))
    return (c if done else nxt), left, right, done


@_inline
def _shrink_newton(a, b, r, kf, F, D2, Sr, c, left, right):
    """The Newton part of _shrink_step: (the Newton point, the new bracket,
    whether c is the root: g = 0 or a correction below half a unit of c).
    The step takes the Newton point where it lies inside the new bracket,
    else the bracket's geometric middle.  Without branches, so that a loop
    of steps over many columns vectorises (_group_exclusive_shrinks)."""
    den = 1.0 + b * c * kf
    e = (r - b * c * F) / den
    N = math.sqrt(D2 + 2.0 * e * F + kf * e * e)
    g = c - 1.0 + a / N
    slope = 1.0 + (a / N) * ((F + kf * e) / N) * ((b / den) * (Sr / N)) / den  # no N^3 overflow
    below = g < 0.0
    left = c if below else left
    right = right if below else c
    # far left of the root (c << 1/b) the slope overflows: then a
    # correction g/inf = 0 is no convergence, take the middle
    newton = c - g / slope if slope < np.inf else left
    return newton, left, right, (g == 0.0) | (newton == c)


@_jit
def _group_exclusive_shrinks(a, b, r, k, F, D2, cols, c):
    """c[g] = _group_exclusive_shrink(a[g], b[g], r[g], k[g], F[g], D2[g]) for
    every g in ``cols``, the same steps on the same numbers (the same bits).
    Each column's Newton steps are a chain of dependent divisions and
    square roots (about 70 ns a column, 2-3 steps); here they are taken a
    round at a time over the columns: while at least a quarter still move,
    every column steps (in SIMD lanes; a settled column keeps its c), then
    only the ones still moving (the processor overlaps their chains).
    0.8x the time of rounds over the moving columns alone, on 784 columns
    like a training step's.  The starts are vectorised too, and a round
    takes the geometric middles (two square roots a lane) only for the
    columns whose Newton point leaves the bracket: 0.6-0.7x the time of
    rounds taking them in every lane, on a training step's 784 and 300
    columns."""
    m = cols.shape[0]
    av, bv, rv, kv, Fv, Dv = np.empty(m), np.empty(m), np.empty(m), np.empty(m), np.empty(m), np.empty(m)
    Sr = np.empty(m)  # (S_r = F + k r, as _group_exclusive_shrink forms it once)
    cc = np.empty(m)
    left = np.zeros(m)
    right = np.ones(m)
    moving = np.ones(m, dtype=np.bool_)
    for j in range(m):  # (gathers)
        g = cols[j]
        av[j], bv[j], rv[j], kv[j], Fv[j], Dv[j] = np.float64(a[g]), np.float64(b[g]), r[g], np.float64(k[g]), F[g], D2[g]
    middle = _geometric_middle(0.0, 1.0)
    for j in range(m):  # (vectorised)
        cc[j] = _shrink_start_at(av[j], bv[j], rv[j], kv[j], Fv[j], Dv[j], middle)
        Sr[j] = Fv[j] + kv[j] * rv[j]
    n_live = m
    rounds = 0
    to_middle = np.zeros(m, dtype=np.bool_)
    while n_live > 0 and 4 * n_live >= m and rounds < _MAX_ROOT_ITER:
        # _shrink_step on every moving column: the Newton points in SIMD
        # lanes, the geometric middles (two square roots) apart, for the
        # columns whose Newton point leaves the bracket (rare in training:
        # the start is already close to the root)
        n_live = 0
        n_middle = 0
        for j in range(m):
            newton, lo, hi, settled = _shrink_newton(av[j], bv[j], rv[j], kv[j], Fv[j], Dv[j], Sr[j], cc[j], left[j], right[j])
            on = moving[j] & ~settled
            inside = (newton > lo) & (newton < hi)
            cc[j] = newton if on & inside else cc[j]
            left[j] = lo if moving[j] else left[j]
            right[j] = hi if moving[j] else right[j]
            to_middle[j] = on & ~inside
            n_middle += 1 if on & ~inside else 0
            moving[j] = on
            n_live += 1 if on else 0
        if n_middle:
            for j in range(m):
                if to_middle[j]:
                    middle_j = _geometric_middle(left[j], right[j])
                    if (left[j] < middle_j) & (middle_j < right[j]):
                        cc[j] = middle_j
                    else:  # the bracket cannot shrink: c is the root
                        moving[j] = False
                        n_live -= 1
        rounds += 1
    live = np.empty(n_live, dtype=np.int64)
    q = 0
    for j in range(m):
        if moving[j]:
            live[q] = j
            q += 1
    for _ in range(rounds, _MAX_ROOT_ITER):
        if n_live == 0:
            break
        n_next = 0
        for q in range(n_live):
            j = live[q]
            cc[j], left[j], right[j], done = _shrink_step(av[j], bv[j], rv[j], kv[j], Fv[j], Dv[j], Sr[j], cc[j], left[j], right[j])
            if not done:
                live[n_next] = j
                n_next += 1
        n_live = n_next
    for j in range(m):
        c[cols[j]] = cc[j]


@_rjit
def _gx_sums(src, n, f1, f2, t):
    """F(t) = sum (y - t)_+, Q(t) = sum (y - t)_+^2 and k = #{y >= t} over
    y = (|src_j| f1) f2, j < n (vectorised): a support's statistics at its
    least entry t."""
    if f1 == 1.0 and f2 == 1.0:
        return _gx_sums_loop(src, n, 1.0, 1.0, t)
    return _gx_sums_loop(src, n, f1, f2, t)


@_inline
def _gx_sums_loop(src, n, f1, f2, t):
    F = 0.0
    Q = 0.0
    k = 0
    for j in range(n):
        d = (abs(np.float64(src[j])) * f1) * f2 - t
        p = d if d > 0.0 else 0.0
        F += p
        Q += p * p
        k += 1 if d >= 0.0 else 0
    return F, Q, k


@_rjit
def _gx_pass(src, n, f1, f2, t):
    """The search's pass at t: F(t), Q(t) as _gx_sums, k(t) = #{y > t} and
    min{y > t} (inf if none; through the values' bits, as in _min_above:
    the same value), in one vectorised pass."""
    if f1 == 1.0 and f2 == 1.0:
        return _gx_pass_loop(src, n, 1.0, 1.0, t)
    return _gx_pass_loop(src, n, f1, f2, t)


@_inline
def _gx_pass_loop(src, n, f1, f2, t):
    F = 0.0
    Q = 0.0
    k = 0
    mb = np.int64(_INF_BITS)
    for j in range(n):
        y = (abs(np.float64(src[j])) * f1) * f2
        d = y - t
        p = d if d > 0.0 else 0.0
        F += p
        Q += p * p
        k += 1 if d > 0.0 else 0
        mb = min(mb, _bits(y) if d > 0.0 else np.int64(_INF_BITS))
    return F, Q, k, _from_bits(mb)


@_jit
def _gx_root_below(mu, t, F, Q, k, a, b, m):
    """Whether phi(mu) > 0 for certain, from the sums F, Q, k of a pass over
    at most m entries at a lower point t < mu, where mu = min{y > t} (so
    that {y > t} are also the candidates at mu): then the root theta* of
    the increasing phi lies in (t, mu), no entry lies in (t, theta*], and
    the support is {y > t} with no pass at a point above the root.

    On (t, mu] the candidates do not change, so with d = mu - t,
    F(mu) = F(t) - k d and Q(mu) = Q(t) - d (2 F(t) - k d) <= Q(t) - d F(t)
    (as F(t) >= k d).  The computed sums are within gamma = (m + 8) 2^-52
    of the exact ones (non-negative terms, each rounded once); every
    rounding below is pushed the safe way (factors 1 -+ 2^-50), so
    phi(mu) >= mu - b F_up (1 - a/sqrt(Q_up))_+ = mu - X holds for the
    computed bound.  The test asks mu - X > max(2^-40, 4 gamma) (mu + X):
    far above the rounding of a computed phi at any point t' >= mu
    (phi(t') >= phi(mu) + t' - mu, phi' >= 1), so that every later point
    of the search at or above mu would have been an upper one: the support
    is the one the search finds without the test (the same bits)."""
    if not (mu < np.inf and k > 0):
        return False
    gam = (m + 8) * 2.0**-52
    lo = 1.0 - 2.0**-50
    up = 1.0 + 2.0**-50
    d = ((mu - t) * lo) * lo  # <= mu - t
    F_up = F * (1.0 + gam) - (k * d) * lo
    if not F_up > 0.0:
        return True  # F(mu) = 0: phi(mu) = mu > 0
    F_up *= up
    shrink = 1.0
    if a > 0.0:
        Q_up = Q * (1.0 + gam) - (d * (F * (1.0 - gam))) * lo
        if not Q_up > 0.0:
            return True  # Q(mu) = 0 <= a^2: phi(mu) = mu > 0
        shrink = 1.0 - (a / math.sqrt(Q_up * up)) * lo
        if not shrink > 0.0:
            return True  # ||u(mu)|| <= a: phi(mu) = mu > 0
        shrink *= up
    X = ((b * F_up) * up) * shrink * up
    return mu - X > max(2.0**-40, 4.0 * gam) * (mu + X)


@_jit
def _compact_above(src, n, f1, f2, t, dst):
    """Keep the y = (|src_j| f1) f2 > t of src[:n] in dst[:c], in order (dst
    may be src: entry j is read before dst[c <= j] is written); returns c.
    Branch-free (every y is stored, the count advances by y > t): with a
    test deciding the store, about half the entries of a row near its
    threshold cost a mispredicted branch (3-9 ns an entry against ~1)."""
    if f1 == 1.0 and f2 == 1.0:
        return _compact_above_loop(src, n, 1.0, 1.0, t, dst)
    return _compact_above_loop(src, n, f1, f2, t, dst)


@_inline
def _compact_above_loop(src, n, f1, f2, t, dst):
    c = 0
    for j in range(n):
        y = (abs(np.float64(src[j])) * f1) * f2
        dst[c] = y
        c += np.int64(y > t)
    return c


@_jit
def _gx_theta(x, f1, f2, a, b, F0, Q0, k0, buf, ymin):
    """The group+exclusive threshold's support: theta* is the root of the
    increasing phi(t) = t - b F(t) (1 - a/sqrt(Q(t)))_+ (phi(0) < 0 as
    ||w|| > a; phi(t) = t > 0 from the largest entry on, so the row sum F0
    is an upper point).  A bracket [lo, hi] is narrowed by Newton steps from
    lo (phi' as in _newton_point), else the secant of the bracket, else its
    midpoint, each evaluated by one vectorised pass over the candidates
    y > lo (compacted into buf, before a pass, once fewer than a quarter
    remain: never after the last pass, which a compaction would not repay;
    benchmarks/ab_rows.py --op group_exclusive, serial, a = 0.3 sqrt(m)
    times 1, 0.1 and 0.01, b = 10/m to 1e4/m: 0.94-1.01x the time of
    compacting after any such pass, float32 the same bits), until no
    entry lies in (lo, hi]: the support {y > theta*} is then {y > lo}.  After
    two upper points in a row (lo stuck: a secant's one-sided, linear
    convergence) the midpoint is taken, so the bracket halves at least every
    third pass and the search is finite.  Each pass also gives the least
    candidate mu = min{y > t}: after a lower point whose mu is surely above
    the root (_gx_root_below) the search ends there, without the passes
    that would only confirm it (2 fewer on most rows: the second Newton
    point is usually on the root's piece already), and mu is the support's
    least entry, which the caller's statistics need (one pass fewer).
    ``ymin``: min{y > 0} when known, else 0.  Returns (lo, n, in_buf, mu):
    the candidates y > lo are in the row (n = m) or in buf[:n], mu = their
    least (0 where unknown: lo = 0 and ymin unknown), and Flo, Qlo, klo
    the sums F(lo), Q(lo) and count k(lo) over those candidates."""
    m = x.shape[0]
    lo = 0.0
    Flo, Qlo, klo = F0, Q0, k0
    mulo = ymin if ymin > 0.0 else 0.0
    glo = _phi(0.0, F0, Q0, a, b)
    hi = ghi = F0
    khi = 0
    n = m
    in_buf = False
    same = False  # the last lower point stayed on the piece of the one before
    nhi = 0  # upper points in a row
    # at most m pieces, each ended within a few Newton steps, and a bracket
    # halved every third pass otherwise (2^11 binades of 53 bits): a bound
    # that only guards against an unforeseen loop
    for _ in range(7000 + 4 * m):
        if klo == khi:  # no entry in (lo, hi]
            break
        if nhi >= 2:
            t = 0.5 * (lo + hi)
            nhi = 0
        else:
            t = _newton_point(lo, glo, Flo, Qlo, klo, a, b)
        if same:
            # Newton from the left on one smooth piece converges quadratically
            # but never reaches an upper point on that piece, which is what ends
            # the search: overshoot by the step (the bracket keeps this safe)
            t = lo + 2.0 * (t - lo)
        if not (t > lo and t < hi):
            if ghi > glo:
                t = lo - glo * ((hi - lo) / (ghi - glo))  # secant
            if not (t > lo and t < hi):
                t = 0.5 * (lo + hi)
        if not (t > lo and t < hi):  # no float strictly inside the bracket
            break
        if not in_buf and 4 * klo < m:
            n = _compact_above(x, m, f1, f2, lo, buf)
            in_buf = True
        elif in_buf and 2 * klo < n:
            n = _compact_above(buf, n, 1.0, 1.0, lo, buf)
        if in_buf:
            F, Q, k, mu = _gx_pass(buf, n, 1.0, 1.0, t)
        else:
            F, Q, k, mu = _gx_pass(x, m, f1, f2, t)
        g = _phi(t, F, Q, a, b)
        if g < 0.0:
            same = k == klo
            nhi = 0
            lo, glo, Flo, Qlo, klo, mulo = t, g, F, Q, k, mu
        else:
            same = False
            nhi += 1
            hi, ghi, khi = t, g, k
        if g < 0.0 and _gx_root_below(mu, t, F, Q, k, a, b, m):
            break
    return lo, n, in_buf, mulo, Flo, Qlo, klo


@_jit
def _group_exclusive_core(x, src, g1, g2, f1, f2, s, a_s, br, o, buf, ymin, F0, Q0, k0):
    """_group_exclusive_row once scaled: the passes read y = (|src| g1) g2,
    the output is formed from y = (|x| f1) f2 (the same values).  F0, Q0, k0
    are sum y, sum y^2 and #{y > 0} (the first pass's, for an unscaled row),
    or Q0 < 0: then a pass forms them.  With ymin = min{y > 0} known (> 0),
    phi(ymin) > 0 says the support is every nonzero entry, as in
    _exclusive_core: then no search.  Returns (pending, Y_k, F_k,
    D2_k, k): pending where the row's output waits for its shrink factor
    (the support {y >= Y_k} and its sums known; _group_exclusive_finish),
    else the row is written (zero, scaled, the exclusive lasso).  The
    support's sums (F_k, D2_k, k)
    come from the sums of the last pass at a lower point (the first pass's
    at 0 for the fast path, the search's at lo), shifted to Y_k, where
    they cancel little (_gx_support_sums: about 2x the direct sums' error
    at most), else from a pass of their own: 0.86-0.93x the time of that
    pass on Gaussian rows (784 x 300, 300 x 784, 512 x 4608, float32 and
    float64, b = 1/m and 10/m; benchmarks/ab_rows.py --op group_exclusive,
    2026-12-07); the last bits of F_k and D2_k change with it."""
    m = x.shape[0]
    if Q0 < 0.0:
        F0, Q0, k0, _ = _gx_pass(src, m, g1, g2, 0.0)
    nrm = math.sqrt(Q0)
    if not (nrm > a_s and br < np.inf):
        _zero_row(x, o)
        return False, 0.0, 0.0, 0.0, 0
    if br == 0.0:
        _scale_row(x, 1.0 - a_s / nrm, o)
        return False, 0.0, 0.0, 0.0, 0
    if a_s == 0.0:  # the exclusive lasso
        _exclusive_row(x, br, o, buf)
        return False, 0.0, 0.0, 0.0, 0
    if ymin > 0.0:
        Fk, D2, k = _gx_support_sums(src, m, g1, g2, ymin, 0.0, F0, Q0, k0)
        if _phi(ymin, Fk, D2, a_s, br) > 0.0:
            return True, ymin, Fk, D2, k
    lo, n, in_buf, Yk, Flo, Qlo, klo = _gx_theta(src, g1, g2, a_s, br, F0, Q0, k0, buf, ymin)
    if not Yk > 0.0:  # (lo = 0 and ymin unknown: the support's least entry)
        Yk = _min_above(buf, n, 1.0, 1.0, lo) if in_buf else _min_above(src, n, g1, g2, lo)
    if in_buf:
        Fk, D2, k = _gx_support_sums(buf, n, 1.0, 1.0, Yk, lo, Flo, Qlo, klo)
    else:
        Fk, D2, k = _gx_support_sums(src, n, g1, g2, Yk, lo, Flo, Qlo, klo)
    return True, Yk, Fk, D2, k


@_jit
def _group_exclusive_finish(x, f1, f2, s, br, Yk, Fk, k, c, o):
    """The output of a row whose support {y >= Y_k} has the sums F_k, k and
    shrink factor c (_group_exclusive_shrink):
    |o_i| = c ((|w_i| - Y_k) + e) s, e = (Y_k - b c F_k)/(1 + b c k)."""
    beta = br * c
    e = (Yk - beta * Fk) / (1.0 + beta * k)
    _support_out(x, f1, f2, Yk, e, c * s, o)


@_jit
def _group_exclusive_row(x, ar, br, o, buf):
    """_group_exclusive_row_stats, then the pending row's shrink factor
    (_group_exclusive_shrink) and output; whether the row was finite."""
    finite, pending, Yk, Fk, D2, k, a_s, s, f1, f2 = _group_exclusive_row_stats(x, ar, br, o, buf)
    if pending:
        _group_exclusive_finish(x, f1, f2, s, br, Yk, Fk, k, _group_exclusive_shrink(a_s, br, Yk, k, Fk, D2), o)
    return finite


@_jit
def _group_exclusive_row_stats(x, ar, br, o, buf):
    """x = c u(b c) s: u the exclusive prox (scaled), c in (0, 1] (reference's
    group_exclusive); 0 iff ||w|| <= a or b = inf.  With lo the lower point
    of the threshold search (the support is {y > lo}) and Y_k, F_k, D2_k, k
    that support's statistics (_gx_support_sums), |x_i| = c ((|w_i| - Y_k) + e)
    s, e = (Y_k - b c F_k)/(1 + b c k): the reference's cancellation-free
    formula (see _exclusive_row).  Unscaled (s = 1) when the row sum lies in
    [m 2^-400, 2^400] (no square over- or underflows to matter there).
    All but c and the output: returns (finite, pending, Y_k, F_k, D2_k, k,
    a_s, s, f1, f2), finite whether the row holds no NaN or Inf (one that
    does is copied), pending as _group_exclusive_core's (then the row is
    finished by _group_exclusive_finish with c from Y_k, F_k, D2_k, k,
    a_s and b, and s, f1, f2 its scale)."""
    m = x.shape[0]
    total, sq, ymin, nnz = _abs_sum_min(x, True)
    if not _row_finite(x, total):  # nothing to solve: NaN and Inf pass through
        _copy_row(x, o)
        return False, False, 0.0, 0.0, 0.0, 0, 0.0, 1.0, 1.0, 1.0
    s = f1 = f2 = 1.0
    if total > 0.0 and not (total <= 2.0**400 and total >= m * 2.0**-400):
        s, f1, f2 = _scale_factors(_absmax(x))
    a_s = ar / s
    if f1 != 1.0:  # the passes read a scaled copy (see _scaled_abs_copy)
        pending, Yk, Fk, D2, k = _group_exclusive_core(x, _scaled_abs_copy(x, f1, f2), 1.0, 1.0, f1, f2, s, a_s, br, o, buf, 0.0, 0.0, -1.0, 0)
    elif s != 1.0:
        pending, Yk, Fk, D2, k = _group_exclusive_core(x, x, f1, f2, f1, f2, s, a_s, br, o, buf, _scaled_min(ymin, f1, f2), 0.0, -1.0, 0)
    else:  # unscaled: the first pass's sums are F(0), Q(0), k(0)
        if not _support_may_be_all(ymin, total, nnz, m, a_s, br):
            ymin = 0.0  # (no fast path)
        pending, Yk, Fk, D2, k = _group_exclusive_core(x, x, f1, f2, f1, f2, s, a_s, br, o, buf, _scaled_min(ymin, f1, f2), total, sq, nnz)
    return True, pending, Yk, Fk, D2, k, a_s, s, f1, f2


_GX_BLOCK = 64  # rows whose shrink factors are found together (_group_exclusive_rows)
_GX_MIN_LANES = 16  # fewer pending rows in a block: their shrink factors one by one


@_jit
def _group_exclusive_rows(W, a, b, out, r0, r1, buf):
    """_group_exclusive_row on the rows r0 <= r < r1 of W, the same bits, in
    blocks of _GX_BLOCK rows: each row's statistics first
    (_group_exclusive_row_stats), then the block's shrink factors at once
    (_group_exclusive_shrinks: each row's Newton steps are a chain of
    dependent divisions and square roots, which it overlaps across the
    rows), then their outputs (the block's rows read again from cache).
    The shrink factors cost 0.17 us a row one by one, a quarter of the
    whole at 784 x 300 float32.  A block of fewer than _GX_MIN_LANES
    pending rows (a parallel chunk of a few rows) takes them one by one
    (_group_exclusive_shrink: the same bits), as the scratch of the
    vectorised steps would cost more.  Whether every row was finite."""
    nb = max(min(_GX_BLOCK, r1 - r0), 0)
    rows = np.empty(nb, dtype=np.int64)
    k = np.empty(nb, dtype=np.int64)
    v = np.empty((9, nb))
    Y, F, D2, a_s, bs, s, f1, f2, c = v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]
    ok = True
    for start in range(r0, r1, _GX_BLOCK):
        n = 0
        for r in range(start, min(start + _GX_BLOCK, r1)):
            br = np.float64(b[r])
            finite, pending, Yk, Fk, D2k, kk, ar, sr, f1r, f2r = _group_exclusive_row_stats(W[r], np.float64(a[r]), br, out[r], buf)
            ok &= finite
            if pending:
                rows[n], Y[n], F[n], D2[n], k[n] = r, Yk, Fk, D2k, kk
                a_s[n], bs[n], s[n], f1[n], f2[n] = ar, br, sr, f1r, f2r
                n += 1
        if n >= _GX_MIN_LANES:
            _group_exclusive_shrinks(a_s, bs, Y, k, F, D2, np.arange(n), c)
        else:
            for j in range(n):
                c[j] = _group_exclusive_shrink(a_s[j], bs[j], Y[j], k[j], F[j], D2[j])
        for j in range(n):
            r = rows[j]
            _group_exclusive_finish(W[r], f1[j], f2[j], s[j], bs[j], Y[j], F[j], k[j], c[j], out[r])
    return ok


def _group_exclusive_chunks(G, m):
    """The chunks of _group_exclusive_par for G rows of m entries: rows
    shorter than 2048 in chunks of at least _GX_BLOCK rows where there are
    enough, so that _group_exclusive_rows' blocks fill (at most _chunks',
    and at least two a thread, for the balance: on 2 threads 784 x 300
    rows 0.84-0.91x the time of 64 chunks, 300 x 784 0.90-0.97x); longer
    rows, whose shrink factors are a few percent of their time, in
    _chunks' (512 x 4608: 0.93-1.08x the time with chunks of 64 rows,
    benchmarks/ab_rows.py --parallel)."""
    most = _chunks(G)
    if m >= 2048:
        return most
    return max(min(most, G // _GX_BLOCK), min(most, 2 * nb.get_num_threads()))


@_pjit
def _group_exclusive_par(W, a, b, out, nch):
    """_group_exclusive_row on every row, in ``nch`` chunks
    (_group_exclusive_chunks); whether every row was finite."""
    G, m = W.shape
    ok = np.ones(nch, dtype=np.bool_)
    for ch in prange(nch):
        buf = np.empty(m, dtype=np.float64)
        ok[ch] = _group_exclusive_rows(W, a, b, out, ch * G // nch, (ch + 1) * G // nch, buf)
    return ok.all()


@_jit
def _group_exclusive_seq(W, a, b, out):
    G, m = W.shape
    return _group_exclusive_rows(W, a, b, out, 0, G, np.empty(m, dtype=np.float64))


def group_exclusive(W, a, b, check_finite=False, *, parallel=True, out=None, hint=None):
    """Exact prox of a_r ||x||_2 + b_r/2 ||x||_1^2 on each row (into ``out``,
    which may be ``W``, or a new array).  ``hint``: see :func:`_check_hint`
    (used where the rows are columns); check_finite as
    :func:`exclusive_lasso`'s."""
    return _exclusive_operator(W, a, b, True, check_finite, parallel, out, hint)


# ------------------------------------------------------------------ exact arithmetic


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c with one rounding (LLVM's fma: the hardware instruction, or an
    exact software fallback)."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        d = llvm_ir.DoubleType()
        fn = cgutils.get_or_insert_function(builder.module, llvm_ir.FunctionType(d, [d, d, d]), "llvm.fma.f64")
        return builder.call(fn, args)

    return sig, codegen


def _prefetch_intrinsic(rw):
    @intrinsic
    def prefetch(typingctx, arr, i):
        """A hint to bring arr[i] into the cache (LLVM's prefetch, for
        reading when rw = 0, writing when 1, kept in all cache levels): no
        effect on the result, never a fault."""
        sig = types.void(arr, types.int64)

        def codegen(context, builder, signature, args):
            ary = context.make_array(signature.args[0])(context, builder, args[0])
            i8p = llvm_ir.IntType(8).as_pointer()
            i32 = llvm_ir.IntType(32)
            fn = cgutils.get_or_insert_function(
                builder.module, llvm_ir.FunctionType(llvm_ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0i8"
            )
            ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), i8p)
            builder.call(fn, [ptr, llvm_ir.Constant(i32, rw), llvm_ir.Constant(i32, 3), llvm_ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return sig, codegen

    return prefetch


_prefetch_read = _prefetch_intrinsic(0)
_prefetch_write = _prefetch_intrinsic(1)
# how many entries ahead a random gather or scatter asks for its target: on
# 1e6 float64 (8 MB) a gather in a random order took 10.3 ms, 3.7 ms with
# 64 ahead (3.2 ms in order; AMD EPYC, 2026-12-01), as the loop alone
# leaves too few cache misses in flight
_PREFETCH_AHEAD = 64


@_jit
def _two_sum(a, b):
    """(s, e) with s = fl(a + b) and s + e = a + b exactly (Knuth's TwoSum)."""
    s = a + b
    bp = s - a
    return s, (a - (s - bp)) + (b - bp)


_EXP_LEN = 128  # expansion buffer; compressed expansions of doubles have < 45 terms


@_jit
def _exp_grow(e, ne, x):
    """e[:ne] (non-overlapping, increasing magnitude, no zeros) += x, exactly
    (Shewchuk's Grow-Expansion with zero elimination).  Returns the new length."""
    if x == 0.0:
        return ne
    q = x
    k = 0
    for i in range(ne):
        q, h = _two_sum(q, e[i])
        if h != 0.0:
            e[k] = h
            k += 1
    if q != 0.0:
        e[k] = q
        k += 1
    return k


@_jit
def _exp_compress(e, ne):
    """Shewchuk's Compress: the same value in a non-adjacent expansion (so at most
    about 40 terms for doubles).  In place; returns the new length."""
    if ne <= 1:
        return ne
    q = e[ne - 1]
    bottom = ne - 1
    for i in range(ne - 2, -1, -1):
        s = q + e[i]
        t = e[i] - (s - q)
        if t != 0.0:
            e[bottom] = s
            bottom -= 1
            q = t
        else:
            q = s
    e[bottom] = q
    top = 0
    for i in range(bottom + 1, ne):
        s = e[i] + q
        t = q - (s - e[i])
        if t != 0.0:
            e[top] = t
            top += 1
        q = s
    e[top] = q
    return top + 1 if q != 0.0 else top


@_jit
def _exp_add(e, ne, x):
    """e[:ne] += x (:func:`_exp_grow`), compressed when it nears the buffer's
    _EXP_LEN terms; never longer than _EXP_LEN - 8 after the call.  Finite
    terms always compress to fewer; a NaN or Inf term (unchecked input:
    ``check_finite=False``) makes non-zero errors at every TwoSum, which no
    compression removes, so the expansion is then its rounded value alone
    (NaN or Inf: the result is unspecified there, but no write passes the
    buffer's end; it did, and the heap was corrupted)."""
    ne = _exp_grow(e, ne, x)
    if ne > _EXP_LEN - 8:
        ne = _exp_compress(e, ne)
        if ne > _EXP_LEN - 8:
            e[0] = _exp_approx(e, ne)
            ne = 1
    return ne


@_jit
def _exp_approx(e, ne):
    """The expansion's value rounded (summed from the smallest term up: relative
    error a few eps)."""
    t = 0.0
    for i in range(ne):
        t += e[i]
    return t


# Exact sums of terms that may be huge (sums of n of them would overflow) and
# subnormal (scaling them down would underflow): terms >= 2^-900 in magnitude are
# summed times sc (a power of two <= 1 that keeps the big sums finite), smaller
# ones unscaled; e[0] holds the big part, e[1] the small one, ne their lengths.
_SPLIT = 2.0**-900


@_jit
def _exp2_add(e, ne, x, sc):
    if sc == 1.0 or abs(x) < _SPLIT:
        ne[1] = _exp_add(e[1], ne[1], x)
    else:
        ne[0] = _exp_add(e[0], ne[0], x * sc)


@_jit
def _exp2_value(e, ne, sc, tmp):
    """(sign, rounded value) of big/sc + small, exactly decided.  The small part
    is below n 2^-900 in magnitude: when the big part/sc exceeds 2^-700 it
    decides alone; otherwise big/sc is formed exactly (no overflow) and merged."""
    nb = ne[0]
    ns = ne[1]
    if nb > 0 and abs(e[0, nb - 1]) > 2.0**-700 * sc:
        top = e[0, nb - 1]
        return (1.0 if top > 0.0 else -1.0), _exp_approx(e[0], nb) / sc
    nt = 0
    for i in range(ns):
        tmp[i] = e[1, i]
    nt = ns
    for i in range(nb):
        nt = _exp_add(tmp, nt, e[0, i] / sc)
    if nt == 0:
        return 0.0, 0.0
    nt = _exp_compress(tmp, nt)
    return (1.0 if tmp[nt - 1] > 0.0 else -1.0), _exp_approx(tmp, nt)


# ------------------------------------------------------------------ OWL
#
# Positions: s = |v| sorted ascending; descending position i (the i-th largest
# magnitude, 0-based) is ascending position n-1-i and pairs with w[i].
# z_i = s[n-1-i] - w[i], formed as zh + zl by TwoSum (never rounded), times the
# power of two ``sc`` (1 unless n^2 max|z| could overflow).

_U = 2.0**-53  # unit roundoff
_TINY = 2.0**-1074  # the absolute error of a product by sc that underflows
_OWL_CHUNK = 4096
# _owl_small's chunks: its window of candidate supports is then a chunk or two
# of 64 (the long path's 4096 made the window every entry of a short vector,
# and its compensated pass cost more than the rest of the support search)
_OWL_SMALL_CHUNK = 64


def _weight(w, i):  # pragma: no cover - replaced by the overload below in compiled code
    raise NotImplementedError


@overload(_weight, inline="always")
def _weight_overload(w, i):
    """The OWL kernels' i-th threshold as a float64, from ``w``: an array of
    the thresholds themselves, or ``(weights, step, like)`` (the public
    call's: :func:`owl_checked`), step * weights[i] formed in float64 and
    rounded once to the data's dtype (that of ``like``, any value of it), as
    ``proxlib._range`` forms thresholds in range: the same bits as an array
    of them, without that array (n floats of scratch, and at n = 1e6
    float64 the time of one more array in the cache: 10.9 against 14.5 ms)."""
    if isinstance(w, types.Array):
        return lambda w, i: np.float64(w[i])
    return lambda w, i: np.float64(_in_dtype_of(np.float64(w[0][i]) * w[1], w[2]))


def _weight_array(w):  # pragma: no cover - replaced by the overload below in compiled code
    raise NotImplementedError


@overload(_weight_array, inline="always")
def _weight_array_overload(w):
    """The array :func:`_weight` reads the thresholds from (for prefetching)."""
    if isinstance(w, types.Array):
        return lambda w: w
    return lambda w: w[0]


@_jit
def _owl_scale(s, w):
    """A power of two sc with n^2 max(|v|, w) sc < 2^1021: block sums and their
    products by counts in the PAVA never overflow (1 whenever that already holds)."""
    n = s.shape[0]
    zmax = max(np.float64(s[n - 1]), _weight(w, 0))
    if zmax == 0.0:
        return 1.0
    _, ez = math.frexp(zmax)  # zmax < 2^ez
    _, en = math.frexp(np.float64(n) + 1.0)  # n + 1 < 2^en
    k = ez + 2 * en + 2 - 1021
    return math.ldexp(1.0, -k) if k > 0 else 1.0


@_jit
def _owl_z(s, w, i, sc):
    """(zh, zl) of descending position i, scaled: zh + zl = (s[n-1-i] - w[i]) sc
    (exact unless the product by sc < 1 underflows)."""
    n = s.shape[0]
    zh, zl = _two_sum(np.float64(s[n - 1 - i]), -_weight(w, i))
    return zh * sc, zl * sc


@_jit
def _owl_z_exact(s, w, i):
    """(zh, zl) of descending position i, unscaled: zh + zl = s[n-1-i] - w[i]."""
    n = s.shape[0]
    return _two_sum(np.float64(s[n - 1 - i]), -_weight(w, i))


@_rjit
def _owl_chunk_sums(s, w, sc, ch, c0, c1, A, Up, Ab):
    """Per chunk (``ch`` entries) of descending positions: sum of zh, of
    max(zh, 0), of |zh| (scaled; any summation order: these sums carry an
    error bound)."""
    n = s.shape[0]
    for c in range(c0, c1):
        lo = c * ch
        hi = min(n, lo + ch)
        a = 0.0
        u = 0.0
        b = 0.0
        # unsigned indices: no wraparound test per access, which kept the
        # loop from vectorising (a gather; 4-7x at n = 1e6)
        for i in range(hi - lo):
            z = (np.float64(s[np.uint64(n - 1 - lo - i)]) - _weight(w, np.uint64(lo + i))) * sc
            a += z
            u += z if z > 0.0 else 0.0
            b += abs(z)
        A[c] = a
        Up[c] = u
        Ab[c] = b


@_pjit
def _owl_chunk_sums_par(s, w, sc, ch, A, Up, Ab):
    nc = A.shape[0]
    nt = min(nc, 64)
    for t in prange(nt):
        _owl_chunk_sums(s, w, sc, ch, t * nc // nt, (t + 1) * nc // nt, A, Up, Ab)


@_jit
def _owl_support_window(A, Up, Ab, n, ch):
    """[lo, hi] (indices l of prefix sums P_l, l = 0..n) that surely contains the
    first maximiser of P, from the sums of chunks of ``ch`` entries; and a
    bound on sum |z|.

    Every computed partial sum of at most n scaled terms is within
    delta = (n + 2) eps/2 C (1 + 2 (n + 2) eps) + (n + 1) 2^-1074 of the exact
    one (C = sum |zh|, recursive or any-order summation; zl is below eps/2 |zh|
    and the product by sc underflows by at most 2^-1075).  With B_c the sums up
    to chunk c's start, max P >= max_c B_c - delta, and within chunk c
    P <= B_c + (sum of positive terms of chunk c) + 2 delta: chunks whose bound
    stays below the first are out."""
    nc = A.shape[0]
    C = 0.0
    for c in range(nc):
        C += Ab[c]
    C *= 1.0 + 4.0 * (n + 2) * _U
    delta = (n + 2) * _U * C * (1.0 + 4.0 * (n + 2) * _U) + (n + 1) * _TINY
    best = 0.0
    B = 0.0
    for c in range(nc):
        B += A[c]
        best = max(best, B)
    low = best - delta
    first = -1
    last = -1
    B = 0.0
    for c in range(nc):
        if B + Up[c] + 2.0 * delta >= low:
            if first < 0:
                first = c
            last = c
        B += A[c]
    if first < 0:  # only l = n can be the maximiser
        return n, n, C
    return first * ch, min(n, (last + 1) * ch), C


@_jit
def _owl_support_exact(s, w, sc, lo, hi, C, e, tmp):
    """The first maximiser of P_l over l in [lo, hi] (exact, given that the
    global first maximiser lies there).

    Compensated prefix sums (TwoSum of the running sum, errors and the zl
    summed apart) relative to P_lo are within
    T = 4 m (m + 2) (eps/2)^2 C + 4 (m + 1) 2^-1074 (m = hi - lo) of the exact
    ones, including the rounding of the comparisons; a streaming window keeps
    every l whose sum can still be the maximum.  That window is decided by exact
    expansion sums (Shewchuk), which also settle exact ties (the FIRST
    maximiser wins)."""
    m = hi - lo
    T = 4.0 * m * (m + 2.0) * _U * _U * C + 4.0 * (m + 1.0) * _TINY
    S = 0.0
    c = 0.0
    Sm = 0.0
    cm = 0.0
    ws = lo
    we = lo
    for l in range(lo + 1, hi + 1):
        zh, zl = _owl_z(s, w, l - 1, sc)
        S, q = _two_sum(S, zh)
        c += q + zl
        d = (S - Sm) + (c - cm)
        if d > 0.0:
            if d > 2.0 * T:
                ws = l
            Sm = S
            cm = c
        if d >= -2.0 * T:
            we = l
    best = ws
    ne = np.zeros(2, dtype=np.int64)
    for l in range(ws + 1, we + 1):
        zh, zl = _owl_z_exact(s, w, l - 1)
        _exp2_add(e, ne, zh, sc)
        _exp2_add(e, ne, zl, sc)
        sign, _ = _exp2_value(e, ne, sc, tmp)
        if sign > 0.0:  # P_l > P_best
            best = l
            ne[0] = 0
            ne[1] = 0
    return best


def _owl_support(s, w, sc, parallel):
    """k*: the support of the OWL prox is the k* largest magnitudes, where k* is
    the first index maximising the exact prefix sums P_l = z_0 + ... + z_{l-1}
    (l = 0..n).  (Isotonic regression's min-max formula: the non-increasing fit
    at l is positive iff max_{j > l} P_j > max_{j <= l} P_j.)"""
    n = s.shape[0]
    nc = (n + _OWL_CHUNK - 1) // _OWL_CHUNK
    A = np.empty(nc)
    Up = np.empty(nc)
    Ab = np.empty(nc)
    if parallel and nc > 1:
        _owl_chunk_sums_par(s, w, sc, _OWL_CHUNK, A, Up, Ab)
    else:
        _owl_chunk_sums(s, w, sc, _OWL_CHUNK, 0, nc, A, Up, Ab)
    lo, hi, C = _owl_support_window(A, Up, Ab, n, _OWL_CHUNK)
    if lo == hi:
        return lo
    return _owl_support_exact(s, w, sc, lo, hi, C, np.empty((2, _EXP_LEN)), np.empty(2 * _EXP_LEN))


@_jit
def _owl_pava(s, w, j0, j1, sc, means, starts):
    """Pool-adjacent-violators over ascending positions j0..j1-1 (the support,
    or part of it), z_j = (s[j] - w[n-1-j]) sc rounded; the fit is
    non-decreasing in j.  Blocks are kept as (mean, start) on a stack in
    means/starts, the top block in registers; a block pools with the one
    below while the latter's mean is >= its own.  A pooled block's mean, its
    rounded sum over its length, is clamped between the two means it pools
    (the exact one lies there), so that a run of tied z keeps the exact value
    z: unclamped, three copies of z summed to 3z plus an ulp, above a next z
    an ulp higher, and the two were pooled (zero weights then changed v by up
    to 2 ulps for near-tied magnitudes).  Returns the number of blocks (their
    means are only a guide: the values are recomputed exactly by
    _owl_values, and _owl_monotone pools what rounding left apart)."""
    n = s.shape[0]
    sp = np.uint64(0)  # (unsigned: no wraparound test where it indexes the stack)
    tmean = (np.float64(s[j0]) - _weight(w, n - 1 - j0)) * sc
    tsum = tmean
    tst = j0
    has_top = True
    for i in range(j0 + 1, j1):
        cmean = (np.float64(s[i]) - _weight(w, n - 1 - i)) * sc
        csum = cmean
        cst = i
        while has_top and tmean >= cmean:  # mean(top) >= mean(current): pool
            csum += tsum
            cst = tst
            cmean = min(max(csum / np.float64(i + 1 - cst), cmean), tmean)
            if sp > 0:
                sp -= np.uint64(1)
                tmean = means[sp]
                tst = starts[sp]
                tsum = tmean * np.float64(cst - tst)
            else:
                has_top = False
        if has_top:
            means[sp] = tmean
            starts[sp] = tst
            sp += np.uint64(1)
        tmean = cmean
        tsum = csum
        tst = cst
        has_top = True
    means[sp] = tmean
    starts[sp] = tst
    return np.int64(sp) + 1


@_jit
def _owl_pava_merge(means, starts, nl, off, nr, n):
    """Pool-adjacent-violators continued from the nl blocks in
    means/starts[:nl] (a PAVA of the support's first part) over the nr blocks
    at means/starts[off:off + nr] (a PAVA of the rest, ending at n) taken as
    units, with _owl_pava's decisions and clamp: pooling already pooled
    blocks is what PAVA does, and the exact isotonic fit of the whole pools
    every block of the parts' fits.  The stack grows into the second part's
    slots only after reading them (nl <= off).  Returns the number of blocks.
    The pooling step repeats _owl_pava's: a shared helper returning the new
    stack state (even with inline="always") made _owl_pava 2x slower (11 ->
    21 ms at n = 1e6).

    The first block of the second part that pools with nothing ends the
    pooling: the part's means increase strictly (a PAVA's stack), so no
    later block pools either, and they follow it as they are, in one copy
    (the loop over 308k blocks of a second half, 1e6 N(0, 1) entries with
    step * w = linspace(1, 0), took 0.70 ms)."""
    sp = np.uint64(nl - 1)  # (unsigned: no wraparound test where it indexes the stack)
    tmean = means[sp]
    tst = starts[sp]
    tsum = tmean * np.float64(starts[off] - tst)
    has_top = True
    for r in range(nr):
        cmean = means[off + r]
        cst = starts[off + r]
        en = starts[off + r + 1] if r + 1 < nr else n
        csum = cmean * np.float64(en - cst)
        if not tmean >= cmean:  # block r and all after it stand as they are (has_top holds here)
            means[sp] = tmean
            starts[sp] = tst
            sp += np.uint64(1)
            for q in range(r, nr):  # (forward: sp <= off + r, the stack never passes what it reads)
                means[sp + np.uint64(q - r)] = means[off + q]
                starts[sp + np.uint64(q - r)] = starts[off + q]
            return np.int64(sp) + nr - r
        while has_top and tmean >= cmean:  # mean(top) >= mean(current): pool
            csum += tsum
            cst = tst
            cmean = min(max(csum / np.float64(en - cst), cmean), tmean)
            if sp > 0:
                sp -= np.uint64(1)
                tmean = means[sp]
                tst = starts[sp]
                tsum = tmean * np.float64(cst - tst)
            else:
                has_top = False
        if has_top:
            means[sp] = tmean
            starts[sp] = tst
            sp += np.uint64(1)
        tmean = cmean
        tsum = csum
        tst = cst
        has_top = True
    means[sp] = tmean
    starts[sp] = tst
    return np.int64(sp) + 1


@_pjit
def _owl_pava_halves_par(s, w, j0, h, sc, sums, starts, nbs):
    n = s.shape[0]
    for c in prange(2):
        if c == 0:
            nbs[0] = _owl_pava(s, w, j0, h, sc, sums, starts)
        else:
            nbs[1] = _owl_pava(s, w, h, n, sc, sums[h - j0:], starts[h - j0:])


_OWL_SPLIT_PAVA = 1 << 16  # supports of at least this many entries: two PAVAs and a merge


def _owl_pava_split(s, w, j0, sc, sums, starts, par):
    """PAVA over the support j0..n-1: on long supports the two halves apart
    (at once when parallel) and then their blocks merged; the same blocks
    whether parallel or not."""
    n = s.shape[0]
    k = n - j0
    if k < _OWL_SPLIT_PAVA:
        return _owl_pava(s, w, j0, n, sc, sums, starts)
    h = j0 + k // 2
    nbs = np.zeros(2, dtype=np.int64)
    if par:
        _owl_pava_halves_par(s, w, j0, h, sc, sums, starts, nbs)
    else:
        nbs[0] = _owl_pava(s, w, j0, h, sc, sums, starts)
        nbs[1] = _owl_pava(s, w, h, n, sc, sums[h - j0:], starts[h - j0:])
    return _owl_pava_merge(sums, starts, int(nbs[0]), h - j0, int(nbs[1]), n)


@_jit
def _owl_block_value(s, w, sc, st, en):
    """Mean of the exact z over ascending positions st..en-1, faithfully rounded
    (compensated sum, then the exact remainder of the division by an fma), kept
    within [min, max] of the block's rounded z; unscaled."""
    n = s.shape[0]
    S = 0.0
    c = 0.0
    lo = np.inf
    hi = -np.inf
    for j in range(st, en):
        zh, zl = _owl_z(s, w, n - 1 - j, sc)
        S, q = _two_sum(S, zh)
        c += q + zl
        lo = min(lo, zh)
        hi = max(hi, zh)
    if sc != 1.0 and max(abs(lo), abs(hi)) < _SPLIT * sc:
        # a block of terms below 2^-900: its sums cannot overflow unscaled, and
        # scaled they may have underflowed
        return _owl_block_value(s, w, 1.0, st, en)
    cnt = np.float64(en - st)
    m = S / cnt
    m += (_fma(-m, cnt, S) + c) / cnt
    m = min(max(m, lo), hi)
    return m / sc


@_jit
def _owl_blocks_meet_in_order(s, starts, vals, b):
    """Blocks b-1 and b are in order (see _owl_values)."""
    return not (vals[b - 1] > vals[b] or s[starts[b] - 1] == s[starts[b]])


_OWL_SKIP = 16  # _owl_values tests this many blocks at once for a run of singletons
_OWL_LOOK = 16 * _OWL_SKIP  # and asks for the entries of pooled blocks this many blocks ahead


@_jit
def _owl_values(s, w, sc, starts, b0, b1, nb, vals, pava_means):
    """vals[b] = exact mean of block b (b0 <= b < b1), blocks from _owl_pava.
    Returns whether the blocks b0..b1-1 are in order: no b0 < b < b1 with
    vals[b-1] > vals[b] (a decrease) or s[starts[b] - 1] == s[starts[b]] (a
    run of equal magnitudes split), i.e. nothing in the range for
    _owl_monotone to pool (it then only reads the values, and is skipped).

    ``pava_means``: vals[b0:b1] hold the means that _owl_pava (and
    _owl_pava_merge) left on their stack for these blocks, over non-increasing
    weights.  With sc = 1 a singleton's mean is then already its exact value
    (z rounded once, the expression below), and two adjacent singletons are
    in order: the stack's means increase strictly, and a tie s[j-1] = s[j]
    gives z_{j-1} >= z_j (w non-increasing, rounding monotone), which the
    PAVA pools.  So only the pooled blocks are computed and compared with
    their neighbours, and runs of singletons are passed over _OWL_SKIP
    blocks at a time (starts[b + C] - starts[b] = C: C blocks of one entry),
    and the entries of the pooled blocks ahead are asked for (prefetched)
    while the scan reaches them: O(nb / C + pooled entries) instead of a
    pass over s, w and vals.  At n = 1e6 N(0, 1) entries with decreasing
    weights (owl_stages.py; 2-core AMD EPYC, 2026-12-05): float64, 513 pooled
    blocks, 2.7 -> 0.17 ms; float32, 13,365 pooled blocks, 3.1 -> 1.0 ms."""
    n = s.shape[0]
    ordered = True
    if pava_means and sc == 1.0:
        wa = _weight_array(w)
        b = b0
        while b < b1:
            a = b + _OWL_LOOK  # the blocks of a chunk ahead: where one is pooled, its entries are asked for now
            if a + _OWL_SKIP < b1 and starts[a + _OWL_SKIP] - starts[a] != _OWL_SKIP:
                p = np.int64(starts[a])
                q = np.int64(starts[a + _OWL_SKIP]) - 1
                _prefetch_read(s, p)
                _prefetch_read(s, q)
                _prefetch_read(wa, n - 1 - q)
                _prefetch_read(wa, n - 1 - p)
                _prefetch_write(vals, a)
                _prefetch_write(vals, a + _OWL_SKIP - 1)
            if b + _OWL_SKIP <= b1 and b + _OWL_SKIP < nb and starts[b + _OWL_SKIP] - starts[b] == _OWL_SKIP:
                b += _OWL_SKIP
                continue
            e = min(b + _OWL_SKIP, b1)
            while b < e:
                st = starts[b]
                en = starts[b + 1] if b + 1 < nb else n
                if en - st > 1:
                    val = _owl_block_value(s, w, sc, st, en)
                    vals[b] = val
                    # the pairs (b-1, b) and (b, b+1) by _owl_blocks_meet_in_order's test, inline:
                    # the calls took 1.2x the time at 1e6 float32 (13k pooled blocks)
                    if b > b0 and (vals[b - 1] > val or s[st - 1] == s[st]):
                        ordered = False
                    if (b + 1 < b1 and (starts[b + 2] if b + 2 < nb else n) - en == 1
                            and (val > vals[b + 1] or s[en - 1] == s[en])):  # (a pooled b + 1 tests this pair itself)
                        ordered = False
                b += 1
        return ordered
    prev = 0.0
    for b in range(b0, b1):
        st = starts[b]
        en = starts[b + 1] if b + 1 < nb else n
        if en - st == 1:  # a single entry: its z rounded once (the exact mean, correctly rounded)
            val = np.float64(s[st]) - _weight(w, n - 1 - st)
        else:
            val = _owl_block_value(s, w, sc, st, en)
        vals[b] = val
        if b > b0 and (prev > val or s[st - 1] == s[st]):  # _owl_blocks_meet_in_order, inline (a call here: 5x slower)
            ordered = False
        prev = val
    return ordered


@_pjit
def _owl_values_par(s, w, sc, starts, nb, vals, pava_means, threads):
    """_owl_values over every block, in up to 64 ranges of as many blocks; the
    ranges' own verdicts and the blocks where two ranges meet give the
    whole's.  Each of the pool's threads takes every T-th range (T threads):
    a range's cost is its pooled blocks, which crowd at the low magnitudes
    (1e6 N(0, 1) entries, step * w = linspace(1, 0): 104k of the 150k pooled
    blocks lie in the first half of the blocks, 5.2 ms serially against
    1.5 ms for the second half), where prange's equal contiguous shares gave
    the first thread most of them (all blocks serially 5.8 ms, two threads
    5.5-5.7 ms, interleaved 4.0 ms; 2-core AMD EPYC Zen 4, 2026-12-07).  ``threads``: the pool's, from the caller
    (numba's get_num_threads inside compiled code would make it uncacheable).
    The same values and verdict for any ``threads`` >= 1."""
    nt = min(nb, 64)
    ordered = np.empty(nt, dtype=np.bool_)
    nth = max(1, min(threads, nt))
    for u in prange(nth):
        for t in range(u, nt, nth):
            ordered[t] = _owl_values(s, w, sc, starts, t * nb // nt, (t + 1) * nb // nt, nb, vals, pava_means)
    whole = True
    for t in range(nt):
        b = t * nb // nt
        if not ordered[t] or (b > 0 and not _owl_blocks_meet_in_order(s, starts, vals, b)):
            whole = False
    return whole


@_jit
def _owl_monotone(s, w, sc, starts, nb, vals):
    """Pool adjacent blocks whose exact values decrease (ascending order).

    The first PAVA pooled on rounded z, so near ties (within rounding of the
    block sums) its blocks can be under-pooled, and their exact values then
    decrease, e.g. z = 0.5 + 0.5 + (1.7e38 - 1) - 1.7e38 has an exact mean 0
    where the rounded sums said 1/4.  A second pool-adjacent-violators pass
    over the blocks, each merge re-evaluated exactly, restores a
    non-decreasing fit (run only where _owl_values found blocks out of
    order, which is rare: it then mostly reads the values).  It also pools
    blocks that split a run of equal magnitudes (their exact fit is equal:
    equal magnitudes give non-increasing z, which isotonic regression pools),
    so that tied magnitudes get bitwise equal outputs whatever order the sort
    left them in.  Compacts starts and vals in place; returns the new number
    of blocks."""
    n = s.shape[0]
    top = -1
    for b in range(nb):
        en = starts[b + 1] if b + 1 < nb else n  # the top block always ends here
        st = starts[b]
        val = vals[b]
        top += 1
        starts[top] = st
        vals[top] = val
        while top > 0 and (vals[top - 1] > vals[top] or s[starts[top] - 1] == s[starts[top]]):  # (inline, as in _owl_values)
            top -= 1
            vals[top] = _owl_block_value(s, w, sc, starts[top], en)
    return top + 1


@_jit
def _owl_fix_low_blocks(s, w, sc, starts, nb, vals, e, tmp):
    """The exact fit is positive on the support.  Where rounding left the lowest
    blocks <= 0 (only within rounding of 0), pool them and give them their exact
    mean (expansion sum): a suffix average of the descending z, hence >= the
    exact fit at the support's end > 0; capped by the next block's value."""
    if vals[0] > 0.0:
        return
    n = s.shape[0]
    b1 = 0
    while b1 + 1 < nb and not vals[b1 + 1] > 0.0:
        b1 += 1
    en = starts[b1 + 1] if b1 + 1 < nb else n
    ne = np.zeros(2, dtype=np.int64)
    for j in range(starts[0], en):
        zh, zl = _owl_z_exact(s, w, n - 1 - j)
        _exp2_add(e, ne, zh, sc)
        _exp2_add(e, ne, zl, sc)
    _, total = _exp2_value(e, ne, sc, tmp)
    mean = total / np.float64(en - starts[0])
    if b1 + 1 < nb:
        mean = min(mean, vals[b1 + 1])
    for b in range(b1 + 1):
        vals[b] = mean


# The long path: one sort of packed 64-bit keys gives both the sorted magnitudes
# and the permutation.  A key is (magnitude bits >> t) << (ib + 1) | i << 1 | sign
# (ib = bits of an index, i < 2^ib; the magnitude's bit pattern is monotone in
# the magnitude, so the unsigned keys sort by magnitude, ties by index).
# float32: t = 0 (31 + ib + 1 <= 64 bits): the key order IS the order of the
# magnitudes.  float64: t = ib low bits of the magnitude are dropped, so runs of
# equal truncated keys are then put in order of the full magnitudes (read back
# from v: they are short unless magnitudes agree to 63 - ib bits).
# The keys are sorted as SIGNED integers, with their top bit flipped where
# they use it (float64; ``flip``, 0 otherwise): the same order as unsigned,
# and NumPy's AVX2 sort compares signed 64-bit lanes in one instruction but
# emulates unsigned ones (0.84-0.96x the time at 1e5-1e7 entries, AMD EPYC,
# 2026-12-02).  Only the magnitude part of a key holds the flipped bit.


def _owl_key_flip(mask, t, ib):
    """The int64 XORed into every key: its top bit where a key uses bit 63
    (magnitude bits - t + ib + 1 = 64), else 0."""
    magbits = 63 if mask == np.int64(0x7FFFFFFFFFFFFFFF) else 31
    return np.int64(-(2**63)) if magbits - t + ib + 1 == 64 else np.int64(0)


@_inline
def _owl_key(b, mg, i, ib, flip):
    """The key of entry i, whose bits are b (as int64: int32 bits
    sign-extend) and truncated magnitude bits mg = (b & mask) >> t: the
    unsigned key's bits XOR ``flip``."""
    return ((mg << (ib + 1)) | (i << 1) | ((b >> 63) & 1)) ^ flip


@_jit
def _owl_keys(vbits, mask, t, ib, flip, keys):
    """keys[i] for every i (the unsigned key's bits XOR ``flip``)."""
    for i in range(keys.shape[0]):
        b = np.int64(vbits[i])
        keys[i] = _owl_key(b, (b & mask) >> t, i, ib, flip)


@_jit
def _owl_keys_split(vbits, mask, t, ib, flip, keys, pivot):
    """The keys of _owl_keys, those whose truncated magnitude bits are below
    ``pivot`` packed from the front of ``keys`` and the others from the back
    (in no particular order: each part is sorted next); returns how many are
    below.  Every key of the first part is below every key of the second, so
    sorting the two parts apart sorts the whole."""
    n = keys.shape[0]
    lo = 0
    hi = n  # keys[lo:hi] is free
    for i in range(n):
        b = np.int64(vbits[i])
        mg = (b & mask) >> t
        key = _owl_key(b, mg, i, ib, flip)
        # branch-free (the test is a coin flip): the key goes to both ends of
        # the free slots, and the end it does not belong to stays free
        keys[lo] = key
        keys[hi - 1] = key
        below = np.int64(mg < pivot)
        lo += below
        hi -= 1 - below
    return lo


@_jit
def _owl_count_below(vbits, mask, t, pivot):
    """#{i: (vbits_i & mask) >> t < pivot}: one vectorised pass."""
    c = 0
    for i in range(vbits.shape[0]):
        c += np.int64(((np.int64(vbits[i]) & mask) >> t) < pivot)
    return c


@_jit
def _owl_keys_part(vbits, mask, t, ib, flip, keys, pivot, nlo, above):
    """One part of _owl_keys_split's partition, in increasing index order,
    knowing its size: the nlo keys whose truncated magnitude bits are below
    ``pivot`` into keys[:nlo] (``above`` False: from the front, v read
    forward), or the others into keys[nlo:] (from the back, v read
    backward).  Branch-free: each key is stored at the part's next free
    slot, which advances only when the key belongs there; the scan stops
    when the part is full, so no store leaves it (the other part may be
    filled at the same time, by another thread)."""
    n = keys.shape[0]
    if not above:
        lo = 0
        if nlo > 0:
            for i in range(n):
                b = np.int64(vbits[i])
                mg = (b & mask) >> t
                keys[lo] = _owl_key(b, mg, i, ib, flip)
                lo += np.int64(mg < pivot)
                if lo == nlo:
                    break
    else:
        hi = n
        if nlo < n:
            for i in range(n - 1, -1, -1):
                b = np.int64(vbits[i])
                mg = (b & mask) >> t
                keys[hi - 1] = _owl_key(b, mg, i, ib, flip)
                hi -= np.int64(mg >= pivot)
                if hi == nlo:
                    break


@_pjit
def _owl_radix_sorted_parts(vbits, mask, t, ib, flip, keys, tmp, pivot, low):
    """The keys, sorted (as _owl_keys then :func:`_radix_sort_keys`), in one
    parallel region of two tasks: each counts the keys below ``pivot`` (a
    vectorised pass, so that neither needs the other), packs its part of
    the partition (:func:`_owl_keys_part`: both parts in increasing index
    order, as the radix sort over the bits from ``low`` needs) and sorts it
    (``tmp``: int64 scratch, at least n long).  Each task reads v whole
    where _owl_keys_split read it once; no thread is started and none waits
    for another between the partition and the sorts.  Returns the size of
    the first part."""
    nlos = np.zeros(2, dtype=np.int64)
    n = keys.shape[0]
    for part in prange(2):
        nlo = _owl_count_below(vbits, mask, t, pivot)
        nlos[part] = nlo
        _owl_keys_part(vbits, mask, t, ib, flip, keys, pivot, nlo, part == 1)
        if part == 0:
            _radix_sort(keys[:nlo], tmp[:nlo], low)
        else:
            _radix_sort(keys[nlo:], tmp[nlo:n], low)
    return nlos[0]


_OWL_SPLIT_SORT = 1 << 18  # parallel calls on at least this many entries sort two parts at once
#: whether parallel radix sorts of the OWL keys run in one parallel region
#: (_owl_radix_sorted_parts), else as NumPy's sorts do (a serial partition,
#: then a helper thread): the A/B of ``benchmarks/owl_stages.py --ab-parts``
_RADIX_PARTS_IN_REGION = True
_OWL_PIVOT_SAMPLE = 1023


def _owl_pivot(vbits, mask, t):
    """The median of the truncated magnitude bits of 1023 entries spread over
    v (one more when that median is the sample's least value, so that a run
    of equal least magnitudes, e.g. zeros, goes to the first part): splits v
    into two parts of about n/2 each unless many magnitudes are equal (then
    the parts are uneven: slower, never wrong)."""
    n = vbits.shape[0]
    pos = (np.arange(_OWL_PIVOT_SAMPLE, dtype=np.int64) * (n - 1)) // (_OWL_PIVOT_SAMPLE - 1)
    mags = (vbits[pos].astype(np.int64) & mask) >> t
    mid = _OWL_PIVOT_SAMPLE // 2
    mags.partition(mid)
    pivot = int(mags[mid])
    return pivot + 1 if pivot == int(mags[:mid + 1].min()) else pivot


# the radix sort's widest digit, in bits.  Measured on AMD Zen 4 (OWL keys of
# Gaussian entries): 11-bit digits (2^11 buckets) made each pass 1.3-1.4x
# slower at 1e6-1e7 keys; 8-bit digits from 2^22 keys on, 1.1-1.3x the time of
# 10-bit ones at 5e6-1e7 (as many passes as the fixed digits, plus the span's)
_RADIX_MAX_DIGIT = 10


@_jit
def _radix_digits(nbits):
    """(number of digits, bits per digit) of the radix sort of keys whose
    parts to sort span ``nbits`` bits: the fewest digits of at most
    _RADIX_MAX_DIGIT bits, as even as they can be (a pass costs about the
    same at 8 to 10 bits: fewer passes is what pays)."""
    if nbits == 0:
        return 0, 1
    nd = (nbits + _RADIX_MAX_DIGIT - 1) // _RADIX_MAX_DIGIT
    return nd, (nbits + nd - 1) // nd


@_jit
def _radix_sort(keys, tmp, low=0):
    """Sorts int64 ``keys`` in place (signed order, as ``keys.sort()``) by
    their bits from ``low`` up, stably: keys that agree in those bits keep
    their order, so the sort is complete when such keys are already in
    order (``low = 0``: any keys).  A least-significant-digit radix sort
    of u = ((key with its top bit flipped) >> low) - min u (an unsigned
    order equal to the signed one; the offset leaves the order as it is):
    one pass for the least and largest u, whose difference's bits set the
    digits (:func:`_radix_digits`: the fewest of at most 10 bits, e.g. 4
    of 10 bits where the span is 37 bits, the float64 OWL keys of 1e6
    Gaussian entries, whose magnitude parts cross an exponent's carry
    and so vary in all six of the fixed 8-bit digits they touch), their
    histograms from a second pass, then one stable scatter pass per digit
    that takes more than one value (the others are skipped), alternating
    between ``keys`` and ``tmp`` (int64, at least as long; its contents
    are overwritten), and a copy back after an odd number of passes.
    O(n) per pass, at most 2 + ceil((64 - low) / 10) + 1 passes over n
    keys; no comparisons, so its time does not depend on the CPU's vector
    sort (see :func:`_key_sort`)."""
    n = keys.shape[0]
    if n < 2 or low >= 64:  # (no bits to sort by)
        return
    top = np.uint64(1) << np.uint64(63)
    sh = np.uint64(low)
    lo = (np.uint64(keys[0]) ^ top) >> sh
    hi = lo
    for i in range(n):
        u = (np.uint64(keys[i]) ^ top) >> sh
        lo = min(lo, u)
        hi = max(hi, u)
    span = hi - lo
    nbits = 0
    while nbits < 64 and (span >> np.uint64(nbits)) != np.uint64(0):
        nbits += 1
    nd, bits = _radix_digits(nbits)
    if nd == 0:  # every key agrees from bit low up: in order already
        return
    radix = 1 << bits
    digit = np.uint64(radix - 1)
    hist = np.zeros((nd, radix), dtype=np.int64)
    for i in range(n):
        u = ((np.uint64(keys[i]) ^ top) >> sh) - lo
        for d in range(nd):
            hist[d, (u >> np.uint64(bits * d)) & digit] += 1
    src, dst = keys, tmp[:n]
    odd = False
    at = np.empty(radix, dtype=np.int64)
    for d in range(nd):
        h = hist[d]
        if h.max() == n:  # every key has the same digit: the pass would move nothing
            continue
        s = 0
        for r in range(radix):
            at[r] = s
            s += h[r]
        shift = np.uint64(bits * d)
        for i in range(n):
            k = src[i]
            r = ((((np.uint64(k) ^ top) >> sh) - lo) >> shift) & digit
            dst[at[r]] = k
            at[r] += 1
        src, dst = dst, src
        odd = not odd
    if odd:
        _copy_row(src, keys)


@_jit
def _reverse(a):
    """a[::-1], in place."""
    n = a.shape[0]
    for i in range(n // 2):
        a[i], a[n - 1 - i] = a[n - 1 - i], a[i]


#: How the OWL kernel sorts its packed keys: ``"numpy"`` (NumPy's sort: a
#: SIMD quicksort on x86), ``"radix"`` (:func:`_radix_sort`), or ``"auto"``:
#: the radix sort where NumPy's would be slow (:func:`_numpy_sort_is_slow`),
#: else NumPy's.  The keys are distinct, so the order, and every result,
#: is the same whichever sorts them.
KEY_SORT = "auto"

_NUMPY_SORT_SLOW = None  # (_numpy_sort_is_slow's answer, once asked)


def _numpy_sort_is_slow() -> bool:
    """Whether NumPy sorts 64-bit integers with x86-simd-sort's AVX-512 code
    on an AMD Zen 4 core (LLVM's host CPU name ``znver4``).  Its partitions
    store through ``vpcompressq`` to memory, which Zen 4 runs in microcode
    (AMD's Zen 4 optimisation guide: avoid the memory destination form of
    COMPRESS), and NumPy picks that code on every CPU with AVX-512 (numpy
    issue and pull-request discussions; x86-simd-sort issue 6).  Measured
    on a 2-core AMD EPYC Zen 4 VM (2026-12-04): ``np.sort`` of 1e6 int64 or
    float64 52-55 ms, against 10-11 ms with NumPy's AVX2 code
    (``NPY_DISABLE_CPU_FEATURES="AVX512_ICL X86_V4"``, which only the
    process's environment can set) and 13.6-14.5 ms for :func:`_radix_sort`
    over the keys' magnitude bits (from bit ib + 1); 7-9 ms since its
    digits follow the keys' span (2026-12-05, the OWL keys of 1e6 Gaussian
    entries, float64 and float32).
    False where NumPy's 64-bit sort does not run its AVX-512 code (its
    ``AVX512_SKX`` target off: other CPUs, or disabled)."""
    global _NUMPY_SORT_SLOW
    if _NUMPY_SORT_SLOW is None:
        core = getattr(np, "_core", None) or np.core  # (NumPy 1.x: np.core)
        # (a NumPy without that table: no evidence either way)
        features = getattr(getattr(core, "_multiarray_umath", None), "__cpu_features__", {})
        from llvmlite import binding

        _NUMPY_SORT_SLOW = bool(features.get("AVX512_SKX", False)) and binding.get_host_cpu_name() == "znver4"
    return _NUMPY_SORT_SLOW


def _key_sort():
    """The sort of the OWL keys, as :data:`KEY_SORT` says: a callable
    ``sort(keys, tmp, low, reversed_)`` for keys whose bits below ``low``
    (the index and sign) are increasing along ``keys``, or decreasing if
    ``reversed_`` (``tmp``: int64 scratch of at least ``keys``' length for
    the radix sort; NumPy's sort needs neither)."""
    if KEY_SORT == "radix" or (KEY_SORT == "auto" and _numpy_sort_is_slow()):
        return _radix_sort_keys
    if KEY_SORT not in ("auto", "numpy"):
        raise ValueError(f"KEY_SORT must be 'auto', 'numpy' or 'radix', got {KEY_SORT!r}")
    return _numpy_sort_keys


def _numpy_sort_keys(keys, tmp, low, reversed_):
    keys.sort()


_SORT_RADIX_MIN = 1 << 12  # shorter arrays: NumPy's sort (its per-call cost is lower)


def sort_magnitudes_desc(a):
    """The 1-D float32 or float64 ``a`` of magnitudes (>= +0, or NaN) in
    decreasing order, the same array as ``np.sort(a)[::-1]`` (NaNs first):
    by :func:`_radix_sort` of the bit patterns (a non-negative float's bits,
    as an integer, order as its value; a NaN's exceed inf's) where
    :data:`KEY_SORT` says NumPy's sort is slow (AMD Zen 4:
    :func:`_numpy_sort_is_slow`) and ``a`` holds at least 2^12 entries;
    else NumPy's.  1e6 float64 magnitudes: 14 ms against 53-58 ms for
    ``np.sort`` on a 2-core Zen 4 VM (2026-12-04).  The sort of
    ``OWL.value`` and of the OWL certificate's dual norm.  Other dtypes
    (float16): NumPy's sort."""
    if a.shape[0] < _SORT_RADIX_MIN or a.dtype not in (np.float32, np.float64) or _key_sort() is not _radix_sort_keys:
        return np.sort(a)[::-1]
    if a.dtype == np.float64:
        keys = np.ascontiguousarray(a).view(np.int64).copy()
        _radix_sort(keys, np.empty_like(keys), 0)
        return keys.view(np.float64)[::-1]
    keys = np.ascontiguousarray(a).view(np.int32).astype(np.int64)  # (non-negative: the order of the bits)
    _radix_sort(keys, np.empty_like(keys), 0)
    return keys.astype(np.int32).view(a.dtype)[::-1]


def _radix_sort_keys(keys, tmp, low, reversed_):
    """The radix sort over the magnitude bits only (from ``low``): the keys
    are distinct, so those that agree there differ in their index, and
    with the index increasing along ``keys`` (reversed first if it
    decreases) the stable sort orders them completely; the index's 2-3
    digits need no pass."""
    if reversed_:
        _reverse(keys)
    _radix_sort(keys, tmp, low)


def _owl_sorted_keys(vbits, mask, t, ib, par, tmp=None):
    """The packed keys of v (XOR ``_owl_key_flip``), sorted as signed
    integers by :func:`_key_sort`'s sort (NumPy's SIMD sort, or the radix
    sort on CPUs where that is slow; ``tmp``: int64 scratch for the radix
    sort, at least n long, else it allocates one): the order of the
    unsigned keys.  Parallel calls on >= 2^18 entries partition the keys
    around a sampled median as they are formed and sort the two parts at once:
    no merge.  The radix sort does it in one parallel region of two tasks
    (:func:`_owl_radix_sorted_parts`); NumPy's sort in two threads (both
    sorts release the GIL: one part in a helper thread) after a serial
    partition (:func:`_owl_keys_split`).  The keys are distinct (they hold
    the index), so the sorted order is the same either way.

    The region against the helper thread, radix sort (:data:`_RADIX_PARTS_IN_REGION`;
    an interleaved A/B, ``benchmarks/owl_stages.py --ab-parts``; 2-core AMD EPYC
    Zen 4 VM, 2026-12-07, load 0.3-1.5; the whole ``owl`` call, N(0, 1)
    entries, three runs): 0.70-0.95x the time at 1e6 entries, 0.98-1.03x
    at 1e7, where the sorts themselves outweigh the rest.  The helper
    thread started after numba's pool had run parallel stages, and shared
    a core with its workers while they still spun, waiting for work
    (OpenMP's default wait policy; ``OMP_WAIT_POLICY=PASSIVE`` shortened
    the stage from 10-13.6 to 6.2-8.7 ms); and the partition was a serial
    pass before either sort could start."""
    n = vbits.shape[0]
    keys = np.empty(n, dtype=np.int64)
    flip = _owl_key_flip(mask, t, ib)
    sort = _key_sort()
    if sort is _radix_sort_keys and tmp is None:
        tmp = np.empty(n, dtype=np.int64)
    low = ib + 1  # (the bits of index << 1 | sign)
    if not (par and n >= _OWL_SPLIT_SORT):
        # serial (one pass, vectorised): each parallel region costs a wake-up
        # of the pool, a scheduler slice when the machine is shared
        _owl_keys(vbits, mask, t, ib, flip, keys)  # (in index order)
        sort(keys, tmp, low, False)
        return keys
    if sort is _radix_sort_keys and _RADIX_PARTS_IN_REGION:
        _owl_radix_sorted_parts(vbits, mask, t, ib, flip, keys, tmp, _owl_pivot(vbits, mask, t), low)
        return keys
    nlo = _owl_keys_split(vbits, mask, t, ib, flip, keys, _owl_pivot(vbits, mask, t))
    # (the first part in index order, the second, packed from the back, in reverse)
    th = threading.Thread(target=sort, args=(keys[nlo:], None if tmp is None else tmp[nlo:n], low, True))
    th.start()
    sort(keys[:nlo], None if tmp is None else tmp[:nlo], low, False)
    th.join()
    return keys


@_jit
def _owl_unpack(vbits, mask, t, ib, flip, keys, sbits, j0, j1):
    """sbits[j] = bit pattern of the j-th smallest magnitude (up to the order
    within runs of equal truncated keys when t > 0): from the key (XOR
    ``flip``) when t = 0, else read from v at the key's index."""
    if t == 0:  # (views indexed from 0: see _owl_chunk_sums)
        kd = keys[j0:j1]
        sd = sbits[j0:j1]
        for j in range(j1 - j0):
            sd[j] = ((kd[j] ^ flip) >> (ib + 1)) & mask
    else:
        m = (np.int64(1) << ib) - 1
        ahead = min(j1, max(j0, j1 - _PREFETCH_AHEAD))
        for j in range(j0, ahead):  # unsigned indices: no wraparound tests in the random reads
            _prefetch_read(vbits, np.int64((keys[j + _PREFETCH_AHEAD] >> 1) & m))
            sbits[j] = np.int64(vbits[np.uint64((keys[j] >> 1) & m)]) & mask
        for j in range(ahead, j1):
            sbits[j] = np.int64(vbits[np.uint64((keys[j] >> 1) & m)]) & mask


@_pjit
def _owl_unpack_par(vbits, mask, t, ib, flip, keys, sbits):
    n = keys.shape[0]
    for c in prange(64):
        _owl_unpack(vbits, mask, t, ib, flip, keys, sbits, c * n // 64, (c + 1) * n // 64)


_OWL_RUN_INSERT = 32  # longer runs of equal truncated keys are argsorted


@_jit
def _owl_sort_run(s, keys, a, e):
    """Sort s[a:e] (and keys[a:e] with it) by magnitude: insertion sort for
    short runs, numba's merge argsort otherwise."""
    if e - a <= _OWL_RUN_INSERT:
        for j in range(a + 1, e):
            x = s[j]
            kx = keys[j]
            b = j - 1
            while b >= a and s[b] > x:
                s[b + 1] = s[b]
                keys[b + 1] = keys[b]
                b -= 1
            s[b + 1] = x
            keys[b + 1] = kx
    else:
        order = np.argsort(s[a:e], kind="mergesort")
        ss = s[a:e].copy()
        kk = keys[a:e].copy()
        for j in range(e - a):
            s[a + j] = ss[order[j]]
            keys[a + j] = kk[order[j]]


_OWL_RUN_SKIP = 128  # _owl_order_runs tests this many positions at once for a run


@_jit
def _owl_adjacent_equal(keys, sh, j, e):
    """Whether keys[q] >> sh == keys[q - 1] >> sh for some j <= q < e (j >= 1):
    a vectorised count (unsigned indices: see _owl_chunk_sums)."""
    c = 0
    for q in range(e - j):
        i = np.uint64(j + q)
        c += 1 if (keys[i] >> sh) == (keys[i - np.uint64(1)] >> sh) else 0
    return c > 0


@_jit
def _owl_order_runs(s, keys, ib, j0, j1):
    """Sort s (with its keys) by magnitude within each run of equal truncated
    keys that starts in [j0, j1) (runs are rare: 2 entries every ~100 at
    n = 1e7 Gaussian; long only where magnitudes agree to 63 - ib bits)."""
    n = s.shape[0]
    sh = ib + 1
    j = max(j0, 1)
    while j < j1:
        stop = min(j + _OWL_RUN_SKIP, j1)
        if not _owl_adjacent_equal(keys, sh, j, stop):
            j = stop  # (one vectorised test for the block: the scan takes half the time at n = 1e6)
            continue
        while j < stop:  # a run starts in the block: scan it
            if (keys[j] >> sh) != (keys[j - 1] >> sh):
                j += 1
                continue
            a = j - 1  # a run [a, e)
            top = keys[a] >> sh
            e = j + 1
            while e < n and (keys[e] >> sh) == top:
                e += 1
            if a >= j0:  # else it started in the previous range, which sorts it
                _owl_sort_run(s, keys, a, e)
            j = e + 1


@_jit
def _owl_compact_index(keys, ib, idx):
    """idx[j] = the key's low ib + 1 bits (index << 1 | sign) as int32, written
    over the keys' own memory (idx[j] lies in key j // 2, already read)."""
    m = (np.int64(1) << (ib + 1)) - 1
    for j in range(keys.shape[0]):
        idx[j] = keys[j] & m


@_jit
def _owl_scatter(idx, ib, starts, nb, vals, j0, out, p0, p1):
    """out[i] = +-vals[block of its sorted position] (the sign of v[i], kept
    in the key), +-0 below the support j0; for sorted positions p0 <= p < p1.
    Branch-free in the sign (a product by +-1, exact; the signs are coin
    flips) and asking for each target _PREFETCH_AHEAD positions ahead: on
    1e6 float64 entries 13 -> 7 ms, float32 11 -> 4 ms (serial)."""
    m = (np.int64(1) << (ib + 1)) - 1
    n = out.shape[0]
    last = n - _PREFETCH_AHEAD  # positions with a target to prefetch
    p = p0
    while p < min(p1, j0):
        if p < last:
            _prefetch_write(out, (np.int64(idx[p + _PREFETCH_AHEAD]) & m) >> 1)
        k = np.int64(idx[p]) & m
        out[np.uint64(k >> 1)] = 0.0 * np.float64(1 - 2 * (k & 1))  # unsigned: no wraparound test
        p += 1
    if p >= p1:
        return
    lo = 0  # the last block starting at or before p
    hi = nb - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if starts[mid] <= p:
            lo = mid
        else:
            hi = mid - 1
    b = lo
    val = vals[b]
    nxt = np.int64(starts[b + 1]) if b + 1 < nb else n  # where the next block starts
    for q in range(p, p1):
        if q == nxt:
            b += 1
            val = vals[b]
            nxt = np.int64(starts[b + 1]) if b + 1 < nb else n
        if q < last:
            _prefetch_write(out, (np.int64(idx[q + _PREFETCH_AHEAD]) & m) >> 1)
        k = np.int64(idx[q]) & m
        out[np.uint64(k >> 1)] = val * np.float64(1 - 2 * (k & 1))


@_pjit
def _owl_scatter_par(idx, ib, starts, nb, vals, j0, out):
    n = out.shape[0]
    for c in prange(64):
        _owl_scatter(idx, ib, starts, nb, vals, j0, out, c * n // 64, (c + 1) * n // 64)


@_jit
def _zero_signed(v, out):
    for i in range(v.shape[0]):
        out[i] = 0.0 * v[i]


_OWL_SMALL = 2048  # below this, one compiled call with an argsort (no Python-level steps)


_ORDER_MOVES = 4  # a kept order is given up beyond this many moves per entry (then the argsort)


@_jit
def _sort_seeded(a, order):
    """Sort ``order`` (a permutation of 0..n-1) by a[order], ascending, by
    insertion from the order it holds: O(n + moves).  For an order kept from
    the previous call on similar data: GrOWL's row norms in training move
    little between steps, so few entries move and the branches are
    predictable, where numba's argsort of MLP's 784 norms cost 80 us after a
    training step (30 us on sorted input).  Ties keep the kept order.
    Returns False, ``order`` still a permutation, at a NaN or beyond
    _ORDER_MOVES n moves (the caller then argsorts)."""
    n = a.shape[0]
    budget = _ORDER_MOVES * n
    for i in range(n):
        k = order[i]
        key = a[k]
        if not key == key:
            return False
        j = i - 1
        while j >= 0 and a[order[j]] > key:
            order[j + 1] = order[j]
            j -= 1
        order[j + 1] = k
        budget -= i - 1 - j
        if budget < 0:
            return False
    return True


@_jit
def _argsort_magnitudes(a):
    """A permutation that sorts the magnitudes ``a`` (>= 0; NaN last)
    ascending, by one sort of the long path's packed keys (_owl_keys'
    layout, sign bit 0, sorted as unsigned integers): numba's sort of
    integers, 1.3-1.8x faster than its argsort of floats at 100-2000 entries
    (1.24 vs 1.57 us at 100, 48.7 vs 82.8 us at 2000).  float32: the key
    holds all 31 magnitude bits, so the keys' order is the magnitudes'.
    float64: the key drops the magnitude's ib low bits (ib = the index's
    bits), and the runs of equal truncated keys are then sorted by the
    magnitudes, as the long path sorts them (_owl_order_runs: insertion for
    short runs, a merge sort beyond 32 entries, so 2000 magnitudes that
    agree to 52 bits take 0.1 ms, where an insertion over the whole run took
    5.4 ms).  Ties may come in any order (the OWL kernels give tied
    magnitudes equal values whatever their order)."""
    n = a.shape[0]
    ib = 1
    while (1 << ib) < n:
        ib += 1
    t = 0 if _is_float32(a[0]) else ib
    keys = np.empty(n, dtype=np.int64)
    for i in range(n):
        keys[i] = ((np.int64(_magnitude_bits(a[i])) >> t) << (ib + 1)) | (i << 1)
    keys.view(np.uint64).sort()
    low = (np.int64(1) << ib) - 1
    if t > 0:
        s = np.empty(n, dtype=a.dtype)
        for j in range(n):
            s[j] = a[(keys[j] >> 1) & low]
        _owl_order_runs(s, keys, ib, 0, n)
    perm = np.empty(n, dtype=np.int64)
    for j in range(n):
        perm[j] = (keys[j] >> 1) & low
    return perm


@_jit
def _owl_small(v, w, out, order=None):
    """The whole OWL prox in one compiled call, for short vectors (GrOWL's row
    norms, per-layer calls): the permutation sorting |v|
    (:func:`_argsort_magnitudes`, a sort of packed keys within the call, in
    place of the long path's NumPy sort), the same exact support, PAVA and
    block values as the long path, then the same kind of scatter.  Tied magnitudes get
    equal values after _owl_monotone whatever order the argsort left them in,
    so the result does not depend on how ties are ordered.  ``order``
    (optional, int64, n): a permutation kept between calls (order[0] < 0:
    none yet), sorted from where it is by :func:`_sort_seeded` and left
    sorted for the next call.  O(n log n) (O(n + moves) from a kept order),
    5 n-sized scratch arrays."""
    n = v.shape[0]
    a = np.empty(n, dtype=v.dtype)
    for i in range(n):
        a[i] = abs(v[i])
    if order is None or order.shape[0] != n:
        perm = _argsort_magnitudes(a)
    else:
        if not (order[0] >= 0 and _sort_seeded(a, order)):
            _copy_row(_argsort_magnitudes(a), order)
        perm = order
    s = a[perm]
    sc = _owl_scale(s, w)
    nc = (n + _OWL_SMALL_CHUNK - 1) // _OWL_SMALL_CHUNK
    A = np.empty(nc)
    Up = np.empty(nc)
    Ab = np.empty(nc)
    _owl_chunk_sums(s, w, sc, _OWL_SMALL_CHUNK, 0, nc, A, Up, Ab)
    lo, hi, C = _owl_support_window(A, Up, Ab, n, _OWL_SMALL_CHUNK)
    e = np.empty((2, _EXP_LEN))
    tmp = np.empty(2 * _EXP_LEN)
    k = lo if lo == hi else _owl_support_exact(s, w, sc, lo, hi, C, e, tmp)
    j0 = n - k
    for j in range(j0):
        out[perm[j]] = 0.0 * v[perm[j]]
    if k == 0:
        return
    sums = np.empty(k)
    starts = np.empty(k, dtype=np.int64)
    nb = _owl_pava(s, w, j0, n, sc, sums, starts)
    if not _owl_values(s, w, sc, starts, 0, nb, nb, sums, True):
        nb = _owl_monotone(s, w, sc, starts, nb, sums)
    _owl_fix_low_blocks(s, w, sc, starts, nb, sums, e, tmp)
    for b in range(nb):
        en = starts[b + 1] if b + 1 < nb else n
        val = sums[b]
        for j in range(starts[b], en):
            i = perm[j]
            out[i] = math.copysign(val, v[i])


@_jit
def _owl_arguments_ok(v, w, step, top, check_finite):
    """Whether every check of the public function passes and the thresholds
    ``step * w`` are well inside the kernels' range.  Checks: one weight per entry, weights
    non-increasing, finite and >= 0 (a NaN fails the comparisons), ``v``
    finite (if asked), ``step * w[0]`` at most 2^100 (float32 v) or 2^1000
    (float64): in range with a margin of 2^24 (the general path's test,
    proxlib._range._fits: log2 of the largest threshold below 128 resp.
    1024).  The kernels then form the thresholds where they read them
    (:func:`_weight`).  One pass over w and one over v, with no early exit
    (the tests accumulate: the loops vectorise; a failed call is the rare
    one)."""
    n = v.shape[0]
    ok = _sorted_weights_ok(w, n, step, top)
    if ok and check_finite:
        for i in range(n):
            ok &= np.isfinite(v[i])
    return ok


#: the largest threshold of degree 1 (OWL, GrOWL, the group lasso, weighted
#: l1) that the one-call lanes take, by the data's dtype: in range with a
#: margin of 2^24 (the general path's test, proxlib._range._fits: log2 of the
#: largest threshold below 128 resp. 1024)
_DEGREE1_TOP = {np.dtype(np.float32): 2.0**100, np.dtype(np.float64): 2.0**1000}
#: the same for degree 2 (the exclusive lasso's b, weighted l2^2's w): 2^24
#: inside proxlib._range's _DEGREE2_LIMIT
_DEGREE2_TOP = {np.dtype(np.float32): 2.0**76, np.dtype(np.float64): 2.0**876}


@_jit
def _sorted_weights_ok(w, n, step, top):
    """Whether ``w`` holds one weight per entry (or row) of n >= 1,
    non-increasing and >= 0, with step * w[0] at most ``top`` (a NaN fails
    the comparisons): OWL's and GrOWL's checks of their weights.  One pass
    with no early exit (the tests accumulate: the loop vectorises)."""
    if w.shape[0] != n or not (0.0 <= w[0] and w[0] * step <= top and w[n - 1] >= 0.0):
        return False
    ok = True
    for i in range(1, n):
        ok &= w[i] <= w[i - 1]
    return ok


@_jit
def _owl_small_checked(v, w, step, top, check_finite, out):
    """``_owl_small(v, step * w)`` when every check of
    :func:`_owl_arguments_ok` passes; False (nothing computed)
    otherwise."""
    if not _owl_arguments_ok(v, w, step, top, check_finite):
        return False
    _owl_small(v, (w, step, v[0]), out, None)
    return True


def owl_checked(v, w, step: float, check_finite: bool, *, parallel=True):
    """The public OWL prox of a C-contiguous float32/float64 ``v`` (any shape,
    one flat vector) with float32/float64 weights ``w`` (1-D, C-contiguous)
    and a normal float ``step``, its arguments checked by one compiled pass
    (:func:`_owl_arguments_ok`) and its thresholds formed where the kernels
    read them (:func:`_weight`), in place of the general path's Python
    layers and float64 temporaries (1-3 passes and tens of microseconds):
    the general path's result bit for bit (the same kernel on the same
    thresholds), or None where that path must decide (an error to report,
    a threshold near the end of the range).  Up to 2048 entries the whole
    prox is that one call; beyond, :func:`owl` (``parallel``: False for a
    CPU tensor's view, which keeps to torch's threads)."""
    if v.size == 0:
        return None
    flat = v if v.ndim == 1 else v.reshape(-1)
    top = _DEGREE1_TOP[v.dtype]
    if v.size <= _OWL_SMALL:
        out = np.empty_like(v)
        return out if _owl_small_checked(flat, w, step, top, check_finite, out if v.ndim == 1 else out.reshape(-1)) else None
    if not _owl_arguments_ok(flat, w, step, top, check_finite):
        return None
    return owl(flat, w, parallel=parallel, step=step).reshape(v.shape)


# The row operators' public calls (NumPy arrays, a CPU tensor's view): the
# weights checked and the thresholds formed (GrOWL's and the group lasso's in
# compiled code), then the general path's kernel on the same thresholds,
# without its Python layers (about 8 of 14 us (group lasso) and 14 of 22 us
# (GrOWL) on 64 x 64 float32; benchmarks/CALL_OVERHEAD.md)


def _lane_rows(W):
    """The rows of a C-contiguous W as the general path reads them
    (proxlib._rows.canonical_rows: W.reshape(G, -1), a 1-D W one row), or
    None for a 0-d or empty W (the general path decides)."""
    if W.ndim == 0 or W.size == 0:
        return None
    return W.reshape(1, -1) if W.ndim == 1 else W.reshape(W.shape[0], W.size // W.shape[0])


@_jit
def _growl_thresholds(w, step, top, thr):
    """thr_i = step * w_i, a float64 product stored in thr's dtype (rounded
    once, as proxlib._range forms thresholds in range), where
    _sorted_weights_ok(w, len(thr), step, top); False otherwise (nothing
    formed)."""
    if not _sorted_weights_ok(w, thr.shape[0], step, top):
        return False
    for i in range(thr.shape[0]):
        thr[i] = np.float64(w[i]) * step
    return True


@_jit
def _growl_small_checked(A, w, step, top, check_finite, out):
    """_growl_seq of the rows A (C-contiguous, G <= _OWL_SMALL) with the
    thresholds step * w (:func:`_growl_thresholds`) and the general route's
    fresh kept order: 1; 0 where a weight check fails, 2 where check_finite
    and a norm is not finite (nothing written either way)."""
    G = A.shape[0]
    thr = np.empty(G, dtype=A.dtype)
    if not _growl_thresholds(w, step, top, thr):
        return 0
    order = np.full(G, -1, dtype=np.int64)
    return 1 if _growl_seq(A, thr, out, False, check_finite, order) else 2


def growl_checked(W, w, step: float, check_finite: bool, *, parallel=True):
    """The public GrOWL prox of a C-contiguous float32/float64 ``W`` with
    float32/float64 weights ``w`` (1-D, C-contiguous) and a normal float
    ``step``: the weights checked and the thresholds formed by one compiled
    call, then the kernel the general path runs (its route: :func:`growl`),
    whose result it is bit for bit; None where that path must decide (an
    error to report, a threshold near the end of the range, a 0-d or empty
    W).  Up to 2048 rows, serially, the whole prox is that one call."""
    A = _lane_rows(W)
    if A is None:
        return None
    out = np.empty_like(A)
    top = _DEGREE1_TOP[A.dtype]
    if A.shape[0] <= _OWL_SMALL and not (parallel and _parallel(A)):
        done = _growl_small_checked(A, w, step, top, check_finite, out)
    else:
        thr = np.empty(A.shape[0], dtype=A.dtype)
        done = 0
        if _growl_thresholds(w, step, top, thr):
            try:
                growl(A, thr, check_finite, parallel=parallel, out=out)
                done = 1
            except NonFiniteInput:
                done = 2
    return out.reshape(W.shape) if done == 1 else None


@_jit
def _group_lasso_rows_checked(A, t, check_finite, out):
    """_group_lasso_seq into out with the threshold t on every row (stored
    in A's dtype: rounded once, as the general path's array of them), then
    _norms_finite's verdict, in one compiled call (False: the caller
    discards out)."""
    G = A.shape[0]
    a = np.full(G, t, dtype=A.dtype)
    nrm = np.empty(G, dtype=np.float64)
    _group_lasso_seq(A, a, out, nrm)
    return _norms_finite(nrm, check_finite)


def _lane_threshold(step, factors, top):
    """step * f_1 * f_2 ... (IEEE products, in this order, as
    proxlib._range.product takes them; step a normal float) where every
    factor is >= 0, every partial product is normal, or exactly 0 by a zero
    factor, and the last at most ``top``: then _range's number (its
    mantissas' products round as these products do); else None (the
    general path decides, and reports a NaN or negative factor): a product
    that leaves the normal range below, to a subnormal or to 0, is rounded
    twice by _range and is that path's."""
    t = step
    zero = False
    for f in factors:
        if not f >= 0.0:
            return None
        zero = zero or f == 0.0
        t = t * f
        if not zero and t < 2.0**-1022:
            return None
    return t if t <= top else None


def group_lasso_checked(W, w, step: float, check_finite: bool, *, parallel=True):
    """The public group lasso prox of a C-contiguous float32/float64 ``W``
    with ``w`` = (lam,) (float64; the group weights all 1) and a normal float ``step``: the threshold step * lam
    (:func:`_lane_threshold`, rounded once to W's dtype, as proxlib._range
    forms it in range) and the general path's kernel (:func:`group_lasso`,
    the same row function), its result bit for bit; None where that path
    must decide (lam negative or not finite, a threshold above 2^100
    (float32) / 2^1000 (float64) or in the subnormals, NaN or Inf in W with
    ``check_finite``, a 0-d or empty W)."""
    A = _lane_rows(W)
    if A is None or w.shape != (1,):
        return None
    t = _lane_threshold(step, (float(w[0]),), _DEGREE1_TOP[A.dtype])
    if t is None:
        return None
    if parallel and _parallel(A):
        try:
            return group_lasso(A, np.full(A.shape[0], t, dtype=A.dtype), check_finite, parallel=True).reshape(W.shape)
        except NonFiniteInput:
            return None
    out = np.empty_like(A)
    return out.reshape(W.shape) if _group_lasso_rows_checked(A, t, check_finite, out) else None


def exclusive_lasso_checked(W, w, step: float, check_finite: bool, *, parallel=True):
    """:func:`group_lasso_checked` for the exclusive lasso (``w`` = (lam,)):
    the threshold b = step * lam (degree 2: at most 2^76
    (float32) / 2^876 (float64), 2^24 inside proxlib._range's limit) and
    the general path's kernel (:func:`exclusive_lasso`), its result bit for
    bit, or None."""
    A = _lane_rows(W)
    if A is None or w.shape != (1,):
        return None
    b = _lane_threshold(step, (float(w[0]),), _DEGREE2_TOP[A.dtype])
    return None if b is None else _lane_run(exclusive_lasso, _exclusive_seq, A, W.shape, (b,), check_finite, parallel)


def group_exclusive_checked(W, w, step: float, check_finite: bool, *, parallel=True):
    """:func:`group_lasso_checked` for group+exclusive (``w``: the vector
    (lam, mu), 0 <= mu <= 1): the thresholds a = step * lam * (1 - mu)
    (degree 1) and b = step * lam * mu (degree 2), as proxlib._range forms
    them from those factors, and the general path's kernel
    (:func:`group_exclusive`), its result bit for bit, or None."""
    A = _lane_rows(W)
    if A is None or w.shape != (2,):
        return None
    lam, mu = float(w[0]), float(w[1])
    if not 0.0 <= mu <= 1.0:
        return None
    a = _lane_threshold(step, (lam, 1.0 - mu), _DEGREE1_TOP[A.dtype])
    b = _lane_threshold(step, (lam, mu), _DEGREE2_TOP[A.dtype])
    return None if a is None or b is None else _lane_run(group_exclusive, _group_exclusive_seq, A, W.shape, (a, b), check_finite, parallel)


def _lane_run(kernel, seq, A, shape, thresholds, check_finite, parallel):
    """``kernel`` (an exclusive operator) on the C-contiguous rows A with
    one threshold per argument for every row (arrays of A's dtype: rounded
    once, as proxlib._range gives them), reshaped to ``shape``: where its
    route would run the serial row kernel ``seq`` (rows, not a
    parallel-sized W: :func:`_exclusive_route`), that kernel directly;
    None where check_finite found NaN or Inf (the general path reports
    it)."""
    thr = [np.full(A.shape[0], t, dtype=A.dtype) for t in thresholds]
    if parallel and _parallel(A):
        try:
            return kernel(A, *thr, check_finite, parallel=True).reshape(shape)
        except NonFiniteInput:
            return None
    out = np.empty_like(A)
    return out.reshape(shape) if seq(A, *thr, out) or not check_finite else None


@_jit
def _growl_segments(nrm, s, w, starts, f, orders=None):
    """GrOWL's solve stage (:func:`proxlib.backends._stages.growl_factor`
    with this module's OWL, the same bits) for every segment
    [starts[i], starts[i + 1]) of the row norms ``nrm`` (float64; ``s``
    their scales, float64, or None: 1) with the OWL weights ``w`` (float64),
    into ``f``: f_r = m_r / (nrm_r s_r) with m the OWL prox of the segment's
    nrm s (0 where that is not > 0); a segment whose first weight is
    infinite gets m = 0.  One compiled call for a batch of tensors' row
    norms, each segment at most _OWL_SMALL entries (_owl_small, as
    :func:`owl` solves them), instead of a call and NumPy's steps per
    tensor.  ``orders`` (optional, int64, one entry per norm, kept by the
    caller between calls on the same tensors): each segment's _owl_small
    kept order (the result does not depend on it).  Returns False, having
    written nothing, where some nrm s exceeds 2^1020 (the stage then
    rescales by a power of two: the caller takes it)."""
    if s is not None:
        for j in range(nrm.shape[0]):
            if nrm[j] * s[j] > 2.0**1020:
                return False
    for i in range(starts.shape[0] - 1):
        a, b = starts[i], starts[i + 1]
        if b == a:
            continue
        v = nrm[a:b].copy()
        if s is not None:
            for j in range(b - a):
                v[j] = v[j] * s[a + j]
        new = np.empty(b - a)
        if not w[a] < np.inf:  # (owl: an infinite weight forces 0)
            _zero_signed(v, new)
        elif orders is None:
            _owl_small(v, w[a:b], new, None)
        else:
            _owl_small(v, w[a:b], new, orders[a:b])
        for j in range(b - a):
            f[a + j] = new[j] / v[j] if v[j] > 0.0 else 0.0
    return True


def growl_segments(nrm, s, w, starts, orders=None):
    """:func:`_growl_segments` into a new array, or None where it declines
    (a segment longer than _OWL_SMALL, or norms beyond 2^1020)."""
    if np.any(np.diff(starts) > _OWL_SMALL):
        return None
    f = np.empty_like(nrm)
    return f if _growl_segments(nrm, s, w, starts, f, orders) else None


def _owl_zero(v, out):
    _zero_signed(v, out)
    return out


def owl(v, w, *, parallel=True, step=None):
    """OWL prox of v with thresholds w (already times step), or with ``step``
    the thresholds step * w, formed where they are read (:func:`_weight`;
    ``step * w[0]`` finite): exact zero pattern, faithful values (see the
    module docstring for the algorithm and its cost)."""
    n = v.shape[0]
    out = np.empty_like(v)
    if n == 0:
        return out
    if step is not None:
        w = (w, float(step), v.dtype.type(0))
    elif not w[0] < np.inf:  # an infinite weight (step * w overflowed) forces x = 0
        return _owl_zero(v, out)
    if n <= _OWL_SMALL:
        _owl_small(v, w, out, None)
        return out
    par = parallel and n >= _PAR_MIN
    if v.dtype == np.float64:
        ibits, mask, magbits = np.int64, np.int64(0x7FFFFFFFFFFFFFFF), 63
    else:
        ibits, mask, magbits = np.int32, np.int64(0x7FFFFFFF), 31
    ib = (n - 1).bit_length()  # index bits
    t = max(0, magbits + ib + 1 - 64)  # magnitude bits dropped from the key
    vbits = v.view(ibits)
    # float64: the output, free until the unpack below, is the radix sort's
    # scratch; float32: n int64 of scratch, kept for the blocks' sums (memory
    # touched once: a second fresh 8n bytes cost ~1 ms of page faults at n = 1e6)
    scratch = out.view(np.int64) if v.dtype == np.float64 else np.empty(n, dtype=np.int64)
    keys = _owl_sorted_keys(vbits, mask, t, ib, par, scratch)
    flip = _owl_key_flip(mask, t, ib)
    s = out  # the sorted magnitudes live in the output until the scatter
    if par:  # parallel: the float64 reads from v are random (cache misses overlap)
        _owl_unpack_par(vbits, mask, t, ib, flip, keys, s.view(ibits))
    else:
        _owl_unpack(vbits, mask, t, ib, flip, keys, s.view(ibits), 0, n)
    if t > 0:
        _owl_order_runs(s, keys, ib, 0, n)
    sc = _owl_scale(s, w)
    k = _owl_support(s, w, sc, par)
    if k == 0:
        return _owl_zero(v, out)
    j0 = n - k
    if ib + 1 <= 31:  # index << 1 | sign as int32 in the keys' first half, block starts in the second
        idx = keys.view(np.int32)[:n]
        _owl_compact_index(keys, ib, idx)
        starts = keys.view(np.int32)[n:n + k]
    else:
        idx = keys
        starts = np.empty(k, dtype=np.int64)
    sums = np.empty(k, dtype=np.float64) if v.dtype == np.float64 else scratch.view(np.float64)[:k]
    nb = _owl_pava_split(s, w, j0, sc, sums, starts, par)
    if par and nb > 1:
        ordered = _owl_values_par(s, w, sc, starts, nb, sums, True, get_num_threads())
    else:
        ordered = _owl_values(s, w, sc, starts, 0, nb, nb, sums, True)
    if not ordered:  # rounding under-pooled, or split tied magnitudes (rare)
        nb = _owl_monotone(s, w, sc, starts, nb, sums)
    _owl_fix_low_blocks(s, w, sc, starts, nb, sums, np.empty((2, _EXP_LEN)), np.empty(2 * _EXP_LEN))
    # s is no longer needed: the output is written over it
    if par:
        _owl_scatter_par(idx, ib, starts, nb, sums, j0, out)
    else:
        _owl_scatter(idx, ib, starts, nb, sums, j0, out, 0, n)
    return out


# ------------------------------------------------------------------ elementwise


@_jit
def _zero_of(a):
    """0 of a's dtype."""
    return np.zeros(1, dtype=a.dtype)[0]


# The elementwise kernels are maps over the entries, out_i = one(x_i, w_i, i, c):
# ``one`` is an entry's prox at its weight w_i (w of one entry is broadcast), c
# the call's constants, i the entry's index (read by the maps in a metric: d_i
# = c[i]).  The loops of the two maps (serial, parallel) are written once here
# and inlined into each kernel's Numba IR (_inline), where ``one`` is a
# constant: a jitted function passed as an argument to a compiled function
# would make that function uncacheable.  In place (out is v) the serial map's
# loops read and write one array, which LLVM vectorises: with two arguments
# that alias, its runtime overlap check fails and the scalar loop runs,
# several times slower.


@_inline
def _map_seq(v, w, out, one, c, check):
    """out_i = one(x_i, w_i, i, c) for every i, in order; out may be v.
    Returns the number of entries of v that are NaN or +-Inf where ``check``
    (0 otherwise; a flag that LLVM takes out of the loops)."""
    n = v.shape[0]
    bad = 0
    if w.shape[0] == 1:
        t = w[0]
        if v.ctypes.data == out.ctypes.data:
            for i in range(n):
                x = out[i]
                if check:
                    bad += not abs(x) < np.inf
                out[i] = one(x, t, i, c)
        else:
            for i in range(n):
                x = v[i]
                if check:
                    bad += not abs(x) < np.inf
                out[i] = one(x, t, i, c)
    elif v.ctypes.data == out.ctypes.data:
        for i in range(n):
            x = out[i]
            if check:
                bad += not abs(x) < np.inf
            out[i] = one(x, w[i], i, c)
    else:
        for i in range(n):
            x = v[i]
            if check:
                bad += not abs(x) < np.inf
            out[i] = one(x, w[i], i, c)
    return bad


@_inline
def _map_par(v, w, out, one, c, check):
    """out_i = one(x_i, w_i, i, c) for every i, on Numba's threads (prange);
    the count of _map_seq where ``check`` (a sum over the threads)."""
    n = v.shape[0]
    bad = 0
    if w.shape[0] == 1:
        t = w[0]
        for i in prange(n):
            x = v[i]
            if check:
                bad += not abs(x) < np.inf
            out[i] = one(x, t, i, c)
    else:
        for i in prange(n):
            x = v[i]
            if check:
                bad += not abs(x) < np.inf
            out[i] = one(x, w[i], i, c)
    return bad


@_jit
def _count_not_finite(v):
    """The number of entries of v that are NaN or +-Inf."""
    bad = 0
    for i in range(v.shape[0]):
        bad += not abs(v[i]) < np.inf
    return bad


def _run_map(seq, par, parallel, v, w, out, check_finite: bool, *c):
    """An elementwise kernel pair's map (:func:`_serial_or_parallel`) of v
    into out: ``kernel(v, w, out, *c, check)``.  With ``check_finite``, a
    :class:`NonFiniteInput` where v holds NaN or +-Inf, found by the map's
    own pass (a count beside it: a separate pass before the kernel cost
    more than the kernel at 784 x 300) when out is another array, which is
    then written and discarded; by a pass of its own before anything is
    written when out overlaps v."""
    kernel = _serial_or_parallel(seq, par, parallel, v.shape[0])
    if check_finite and np.may_share_memory(v, out):
        if _count_not_finite(v):
            raise NonFiniteInput("input contains NaN or Inf")
        check_finite = False
    if kernel(v, w, out, *c, check_finite):
        raise NonFiniteInput("input contains NaN or Inf")


@_jit
def _wl1_one(x, t, i, z):
    """sign(x) (|x| - t)_+ in the common type of x and t (z = 0 of x's
    dtype; i unused): the reference's arithmetic, one rounding.  A NaN stays
    NaN (as in the reference and the torch kernels; ``d > z`` would have
    made it 0)."""
    d = abs(x) - t
    return math.copysign(z if d <= z else d, x)


@_pjit
def _weighted_l1_par(v, w, out, check):
    return _map_par(v, w, out, _wl1_one, _zero_of(v), check)


@_jit
def _weighted_l1_seq(v, w, out, check):
    return _map_seq(v, w, out, _wl1_one, _zero_of(v), check)


def _serial_or_parallel(seq, par, parallel, n):
    """The elementwise kernel pair's parallel one where ``parallel`` asks
    for it and the n entries reach _PAR_MIN, else the serial one."""
    return par if parallel and n >= _PAR_MIN else seq


def weighted_l1(v, w, *, parallel=True, out=None, check_finite=False):
    """sign(v) (|v| - w)_+, computed in the common type of v and w and rounded
    once (float32 lanes throughout when both are float32, as proxlib's
    thresholds for float32 data are).  ``check_finite``: see :func:`_run_map`."""
    out = _result(v, out)
    _run_map(_weighted_l1_seq, _weighted_l1_par, parallel, v, w, out, check_finite)
    return out


def _weighted_l1_route(v, out, parallel, hint=None):
    kernel = _serial_or_parallel(_weighted_l1_seq, _weighted_l1_par, parallel, v.shape[0])
    return lambda thr, check_finite: kernel(v, thr[0], out, False)


@_jit
def _wl2_one(x, t, i, c):
    """x / (1 + 2 t); when 1 + 2 t overflows (t > max/2), (x/2) / (1/2 + t)
    (float64 arithmetic; i and c unused)."""
    d = 1.0 + 2.0 * t
    if d < np.inf:
        return np.float64(x) / d
    return (0.5 * np.float64(x)) / (0.5 + t)


@_pjit
def _weighted_l2sq_par(v, w, out, check):
    return _map_par(v, w, out, _wl2_one, 0.0, check)


@_jit
def _weighted_l2sq_seq(v, w, out, check):
    return _map_seq(v, w, out, _wl2_one, 0.0, check)


def weighted_l2sq(v, w, *, parallel=True, out=None, check_finite=False):
    """v / (1 + 2 w) (see _wl2_one).  ``check_finite``: see :func:`_run_map`."""
    out = _result(v, out)
    _run_map(_weighted_l2sq_seq, _weighted_l2sq_par, parallel, v, w, out, check_finite)
    return out


# The public weighted l1 / squared l2 call with a weight per entry (NumPy
# arrays of one shape, or a CPU tensor's view): its checks and the
# thresholds step * w_i formed in the map's one pass (``*_checked``), in
# place of the general path's Python layers, three reductions over the
# weights and a float64 array of thresholds (0.25 ms of a 0.3 ms call at
# 784 x 300 float64 on the 2-core Zen 4, the kernel 0.04 ms)


def _in_dtype_of(t, x):  # pragma: no cover - replaced by the overload below in compiled code
    raise NotImplementedError


@overload(_in_dtype_of, inline="always")
def _in_dtype_of_overload(t, x):
    """The float64 threshold t rounded once to x's dtype (float32 data's
    thresholds are float32, as proxlib._range gives them; the one place of
    that rule in compiled code: the lanes' maps and OWL's :func:`_weight`)."""
    if x == types.float32:
        return lambda t, x: np.float32(t)
    return lambda t, x: t


@_inline
def _checked_map(v, w, step, top, out, one, c, check):
    """out_i = one(x_i, t_i, i, c) with t_i = step * w_i (w of one entry:
    broadcast), formed as proxlib._range forms thresholds in range (a
    float64 product, rounded once to v's dtype), for every i (out is not
    v); returns the number of failed checks: w_i >= 0 and step * w_i <= top
    (a NaN fails both) and, where ``check``, x_i finite.  Its loops are
    prange: Numba's threads in a parallel kernel (_pjit), in order in a
    serial one (_jit), where prange is range."""
    bad = 0
    if w.shape[0] == 1:
        t = np.float64(w[0]) * step
        bad += not ((np.float64(w[0]) >= 0.0) & (t <= top))
        tx = _in_dtype_of(t, v[0])
        for i in prange(v.shape[0]):
            x = v[i]
            if check:
                bad += not abs(x) < np.inf
            out[i] = one(x, tx, i, c)
        return bad
    for i in prange(v.shape[0]):
        wi = np.float64(w[i])
        t = wi * step
        bad += not ((wi >= 0.0) & (t <= top))
        x = v[i]
        if check:
            bad += not abs(x) < np.inf
        out[i] = one(x, _in_dtype_of(t, x), i, c)
    return bad


@_jit
def _weighted_l1_checked_seq(v, w, step, top, out, check):
    return _checked_map(v, w, step, top, out, _wl1_one, _zero_of(v), check)


@_pjit
def _weighted_l1_checked_par(v, w, step, top, out, check):
    return _checked_map(v, w, step, top, out, _wl1_one, _zero_of(v), check)


@_jit
def _weighted_l2sq_checked_seq(v, w, step, top, out, check):
    return _checked_map(v, w, step, top, out, _wl2_one, 0.0, check)


@_pjit
def _weighted_l2sq_checked_par(v, w, step, top, out, check):
    return _checked_map(v, w, step, top, out, _wl2_one, 0.0, check)


def _run_checked(seq, par, parallel, v, w, step, top, check_finite):
    """The checked map of v (C-contiguous float32/float64, any shape) with
    the weights w of its shape (or one weight, a 0-d array) into a new
    array, or None where a check failed (the general path then decides,
    and reports)."""
    if v.size == 0:
        return None
    out = np.empty_like(v)
    kernel = _serial_or_parallel(seq, par, parallel, v.size)
    return out if kernel(v.reshape(-1), w.reshape(-1), step, top, out.reshape(-1), check_finite) == 0 else None


def weighted_l1_checked(v, w, step: float, check_finite: bool, *, parallel=True):
    """The public weighted l1 prox of a C-contiguous float32/float64 ``v``
    with a weight per entry (``w``: float32/float64, v's shape,
    C-contiguous) or one weight (a 0-d array) and a normal float ``step``:
    every check and the thresholds step * w_i (:func:`_in_dtype_of`, as
    OWL's :func:`_weight`) in the map's one pass, the general path's result
    bit for bit (the same entry function on the same thresholds), or None
    where that path must decide (a weight negative or not finite, input
    not finite with ``check_finite``, a threshold above 2^100 (float32) or
    2^1000 (float64): near the end of the kernels' range, proxlib._range)."""
    top = _DEGREE1_TOP[v.dtype]
    return _run_checked(_weighted_l1_checked_seq, _weighted_l1_checked_par, parallel, v, w, step, top, check_finite)


def weighted_l2sq_checked(v, w, step: float, check_finite: bool, *, parallel=True):
    """:func:`weighted_l1_checked` for the weighted squared l2 norm (its
    thresholds' range: at most 2^76 (float32) or 2^876 (float64), 2^24
    inside proxlib._range's limit of its degree-2 thresholds)."""
    top = _DEGREE2_TOP[v.dtype]
    return _run_checked(_weighted_l2sq_checked_seq, _weighted_l2sq_checked_par, parallel, v, w, step, top, check_finite)


def _weighted_l2sq_route(v, out, parallel, hint=None):
    kernel = _serial_or_parallel(_weighted_l2sq_seq, _weighted_l2sq_par, parallel, v.shape[0])
    return lambda thr, check_finite: kernel(v, thr[0], out, False)


def _lp_root_constants(k: int) -> tuple:
    """(c_star, c_pre) of :func:`_lp_root` for k = 2 (p = 1/2) or 3 (p = 2/3):
    c_star = p c_tau^(p - 2), the c of an entry at the threshold tau =
    c_tau lam^(1/(2-p)) (where x* and 0 tie), and the pre-selection's bound
    c_pre = c_star (1 + 2^-20), below the c beyond which the root leaves
    (2/(3 sqrt 3) = 0.385 and 3/4^(4/3) = 0.472)."""
    p = 1.0 - 1.0 / k
    r = 1.0 / (2.0 - p)
    c_tau = (2.0 - p) / (2.0 * (1.0 - p)) * (2.0 * (1.0 - p)) ** r
    c_star = p * c_tau ** (p - 2.0)
    return c_star, c_star * (1.0 + 2.0**-20)


_LP_C_PRE_HALF = _lp_root_constants(2)[1]
_LP_C_PRE_TWO_THIRDS = _lp_root_constants(3)[1]


@_inline
def _lp_root(av, lam, p_code):
    """|x*| of min 1/2 (x - av)^2 + lam |x|^p for p = 1/2 (p_code 1, k = 2)
    or p = 2/3 (p_code 2, k = 3), av > 0 finite, lam >= 0: 0 where that
    wins (at an exact tie as well).  No power, acos or cos: one square
    root (p = 1/2) or cube root (p = 2/3: :func:`_cbrt_pos`, Newton's steps
    where |x| lies in [2^-1000, 2^1000], libm's elsewhere).

    With x = av u^k (k = 1/(1 - p)), the stationarity x - av + lam p
    x^(p-1) = 0 is h(u) = u^(k+1) - u + c = 0, c = p lam av^(p-2) (in
    [0, 0.27] for p = 1/2, [0, 0.40] for p = 2/3 wherever x* beats 0): one
    parameter, every scale at once (no over- or underflow: u in (0.79, 1]).
    x* is the largest root; h is convex on u > 0 and increasing past
    u_min = (k+1)^(-1/k) (0.58, 0.63).  The start 1 - c/k - (k+1) c^2/(2k^3)
    (the root's series to c^2, above u_min for every c kept) takes one
    Newton step, which lands at or right of the root (convexity); from
    there Newton decreases to it, and stops when an iterate no longer
    decreases (the array code's stop).  h is formed as u (u^k - 1) + c,
    u^k - 1 exact (Sterbenz), so the root is within about 2 units of 2^-53
    of exact, x* within a few (h' >= 1 there).  Two or three steps, the
    stalled one included, where the entry is far above the threshold (c
    below 0.01, as for most in training), up to 6 (p = 1/2) or 7 (p = 2/3)
    next to it.  The array code (:func:`._xp_kernels.lp_solve`) solves
    the same equation in x from the closed forms of its roots (acos, cos,
    cube roots) and a power per step: both within ulps of x*, not the same
    bits.

    x* against 0: f(x*) < f(0) iff x*/2 - av + lam x*^p/x* < 0, divided by
    av u^(-1): u^(k+1)/2 - u + c/p < 0.  Pre-selection: c <= c_star (1 +
    2^-20) (:func:`_lp_root_constants`), below which the root exists; the
    entries kept between c_star and it end at 0 by the comparison."""
    if p_code == 1:
        k = 2.0
        c = 0.5 * ((lam / av) / math.sqrt(av))
        c_pre = _LP_C_PRE_HALF
    else:
        k = 3.0
        c = (2.0 / 3.0) * ((lam / av) / _cbrt_pos(av))
        c_pre = _LP_C_PRE_TWO_THIRDS
    if not c <= c_pre:  # (also av = 0: c is inf, or NaN where lam = 0 too; the prox of 0 is 0)
        return 0.0
    u = _lp_u_start(c, k)
    for _ in range(_MAX_ROOT_ITER):
        nxt = _lp_u_step(u, c, k)
        if nxt < u:
            u = nxt
        else:
            break
    return _lp_u_value(u, c, k, av)


@_inline
def _lp_u_power(u, k):
    """u^k for k = 2 or 3, as products (the same operations in _lp_root and its lanes)."""
    return u * u if k == 2.0 else u * u * u


@_inline
def _lp_u_step(u, c, k):
    """Newton's step on h(u) = u^(k+1) - u + c, h formed as u (u^k - 1) + c."""
    uk = _lp_u_power(u, k)
    return u - (u * (uk - 1.0) + c) / ((k + 1.0) * uk - 1.0)


@_inline
def _lp_u_start(c, k):
    """The root's series to c^2, 1 - c/k - (k+1) c^2/(2k^3), and one Newton
    step from it (at or right of the root)."""
    return _lp_u_step(1.0 - c * (1.0 / k + c * ((k + 1.0) / (2.0 * k * k * k))), c, k)


@_inline
def _lp_u_value(u, c, k, av):
    """|x*| = av u^k where x* beats 0 (u^(k+1)/2 - u + c/p < 0, 1/p =
    k/(k - 1)), else 0 (at a tie too)."""
    uk = _lp_u_power(u, k)
    return av * uk if 0.5 * (u * uk) - u + c * (k / (k - 1.0)) < 0.0 else 0.0


@_inline
def _lp_one(x, lam, p, tau, beta, p_code):
    """The global minimiser of 1/2 (z - x)^2 + lam |z|^p, 0 < p < 1, in
    float64; NaN and +-inf pass through.  p = 1/2 and 2/3 (p_code 1, 2):
    :func:`_lp_root` (tau and beta unused).  Other p: the array code's
    algorithm (:func:`._xp_kernels.lp_solve`) per entry, given its
    threshold tau and the convex branch's start beta: Newton from |x| on
    the convex, increasing f'(y) = y - |x| + lam p y^(p-1) (y > beta),
    then the objectives of x* and 0 compared (0 at a tie)."""
    av = abs(np.float64(x))
    if not av < np.inf:  # NaN and +-inf pass through, as in the reference
        return np.float64(x)
    if p_code != 0:
        y = _lp_root(av, lam, p_code)
        if y == 0.0:
            return 0.0
        return -y if x < 0 else y
    # tau (a power with a rounded exponent) only pre-selects, with a margin; the
    # choice between x* and 0 compares their objectives below.
    if not av > tau * (1.0 - 1e-9):
        return 0.0
    y = av
    # Newton on f'(y) = y - av + q, f''(y) = 1 - (1 - p) q / y, q = lam (p (y^p / y))
    # (the caller's exact exponent p: accurate at any scale, no overflow; lam p
    # is not formed first: subnormal for a subnormal lam, see the reference).
    q = lam * (p * (y**p / y))
    y1 = y - (y - av + q) / (1.0 - (1.0 - p) * (q / y))
    y = y1 if y1 > beta else beta
    for _ in range(_MAX_ROOT_ITER):
        q = lam * (p * (y**p / y))
        nxt = y - (y - av + q) / (1.0 - (1.0 - p) * (q / y))
        if nxt < y and nxt > beta:
            y = nxt
        else:
            break
    # x* wins iff f(x*) < f(0): (f(x*) - f(0))/x* = x*/2 - |v| + lam x*^p / x* < 0;
    # at an exact tie 0 is returned, as documented.
    if not (0.5 * y - av + lam * (y**p / y) < 0.0):
        return 0.0
    return -y if x < 0 else y


_LP_LANE_STEPS = 4  # Newton steps after the first in the lanes (_lp_half_lane, _lp_two_thirds_lane)
_LP_BLOCK = 256  # entries of a block of _lp_lanes_block
_CBRT_GUESS = 682 << 52  # (2/3) 1023 2^52: the bits of cbrt(a) ~ bits(a)/3 + this (exact where a = 8^k)


@_inline
def _cbrt_in_range(a):
    """cbrt(a) for a in [2^-1000, 2^1000] (normal, positive), within 2
    units in the last place, without a branch or a call (a loop of these
    vectorises; libm's cbrt is a call): the exponent divided by three on the
    float's bits (within 7% of the root), then four of Newton's steps
    y <- (2 y + a / y^2) / 3, whose relative error squares at each step
    (7e-2, 5e-3, 3e-5, 8e-10, below 1e-18), the last rounded: within about
    1.7 units of the root."""
    y = _from_bits(np.int64(np.float64(_bits(a)) * (1.0 / 3.0)) + _CBRT_GUESS)
    for _ in range(4):
        y = (2.0 * y + a / (y * y)) / 3.0
    return y


@_inline
def _cbrt_pos(av):
    """cbrt(av), av >= 0: :func:`_cbrt_in_range` in its range, libm's
    elsewhere (0 and the extremes)."""
    if av >= 2.0**-1000 and av <= 2.0**1000:
        return _cbrt_in_range(av)
    return np.cbrt(av)


@_inline
def _lp_lane_newton(c, keep, av, x, k):
    """The branch-free end of a lane (:func:`_lp_half_lane`): _lp_root's
    start and steps (the same functions: the same bits), _LP_LANE_STEPS of
    them that keep an iterate only where it decreases, the comparison with
    0; (the result, whether the steps stalled or the entry is not kept)."""
    c = c if keep else 0.0  # (keeps the discarded lanes finite)
    u = _lp_u_start(c, k)
    moved = True
    for _ in range(_LP_LANE_STEPS):
        nxt = _lp_u_step(u, c, k)
        moved = nxt < u
        u = nxt if moved else u
    y = _lp_u_value(u, c, k, av) if keep else 0.0
    r = 0.0 if y == 0.0 else (-y if x < 0 else y)
    return r, (not keep) | (not moved)


@_inline
def _lp_half_lane(x, li):
    """(_lp_one's p = 1/2 result for x at lam = li, whether it is final):
    :func:`_lp_root`'s operations without a branch, so that a loop of
    these vectorises: its first Newton step, then _LP_LANE_STEPS steps that
    keep an iterate only where it decreases (an iterate that stalls then
    stays: the same u as the scalar loop's stop), the comparison with 0 a
    select (:func:`_lp_lane_newton`).  Final unless the last step still
    decreased (then the scalar path, :func:`_lp_one`, decides: some entries
    with c above 0.1, 167 of the 235,200 of an MLP's Adam step) or x is NaN
    or +-inf.  The same bits as _lp_one where final."""
    av = abs(np.float64(x))
    c = 0.5 * ((li / av) / math.sqrt(av))
    r, done = _lp_lane_newton(c, c <= _LP_C_PRE_HALF, av, x, 2.0)
    return r, (av < np.inf) & done


@_inline
def _lp_two_thirds_lane(x, li):
    """_lp_half_lane for p = 2/3: the cube root of |x| by
    :func:`_cbrt_in_range` (as _lp_root takes it there), and not final
    outside its range (|x| > 0 below 2^-1000 or above 2^1000: libm's root,
    in the scalar path)."""
    av = abs(np.float64(x))
    inside = (av >= 2.0**-1000) & (av <= 2.0**1000)
    c = (2.0 / 3.0) * ((li / av) / _cbrt_in_range(av if inside else 1.0))
    r, done = _lp_lane_newton(c, c <= _LP_C_PRE_TWO_THIRDS, av, x, 3.0)
    return r, (av < np.inf) & (inside | (av == 0.0)) & done


@_inline
def _lp_lanes_store(vb, ob, db, i, lam, todo, lane, metric, check):
    """ob[i] from ``lane`` (_lp_half_lane or _lp_two_thirds_lane) where
    final (else vb[i], and todo[i] set); in a metric (``metric``: db the
    metric) lam / db[i], and not final where _lp_metric_one takes another
    route (lam / db[i] outside [_LP_LO, _LP_HI] with lam > 0: the entry's
    own scale; |vb[i]| >= 2^1020: passed through).  Returns whether vb[i]
    is NaN or +-inf where ``check``."""
    x = vb[i]
    li = lam / np.float64(db[i]) if metric else lam
    r, done = lane(x, li)
    if metric:
        done = done & (li >= _LP_LO) & (li <= _LP_HI) & (abs(np.float64(x)) < 2.0**1020)
    ob[i] = r if done else x
    todo[i] = not done
    return (not abs(x) < np.inf) if check else False


@_inline
def _lp_lanes_block(v, w, out, d, j0, j1, todo, xs, passfn, c, check):
    """Entries j0..j1 of lp with p = 1/2 or 2/3 (lam w[0], or w[j] for
    each) by ``passfn`` (:func:`_lp_lanes_pass` for one p and one entry
    function) on views of the block.  v may be out.  The views are indexed
    from 0 (indices from j0 > 0, which LLVM cannot prove non-negative,
    became gathers through Numba's wraparound of negative indices: 1.3-4.5x
    the time), and in place there is one view only (two views of the same
    memory fail the vectorised loop's overlap check, and the scalar loop
    ran: 6x).  In place the block is first copied to the scratch ``xs``
    and read from there: passfn, a compiled function of its own (inlined
    in both branches, its loops compiled 4-10 times longer), cannot tell
    two views of one array from two arrays."""
    ob, db = out[j0:j1], d[j0:j1]  # (d is v outside a metric)
    if v.ctypes.data == out.ctypes.data:
        xb = xs[:j1 - j0]
        xb[:] = ob
        return passfn(xb, w, ob, db, j0, todo, c, check)
    return passfn(v[j0:j1], w, ob, db, j0, todo, c, check)


@_inline
def _lp_lanes_pass(vb, w, ob, db, j0, todo, lane, one, c, metric, check):
    """The vectorised pass of ``lane`` (_lp_lanes_store) over the block's
    views (vb may be ob), then ``one`` (the scalar map's entry function,
    called) on the entries it left; the count of NaN and +-inf where
    ``check``."""
    m = ob.shape[0]
    bad = 0
    if w.shape[0] == 1:
        t = np.float64(w[0])
        for i in range(m):
            bad += _lp_lanes_store(vb, ob, db, i, t, todo, lane, metric, check)
        for i in range(m):
            if todo[i]:
                ob[i] = one(vb[i], t, j0 + i, c)
    else:
        wb = w[j0:j0 + m]
        for i in range(m):
            bad += _lp_lanes_store(vb, ob, db, i, np.float64(wb[i]), todo, lane, metric, check)
        for i in range(m):
            if todo[i]:
                ob[i] = one(vb[i], wb[i], j0 + i, c)
    return bad


@_inline
def _lp_lanes_seq(v, w, out, d, passfn, c, check):
    """The scalar map of lp for p = 1/2 or 2/3, a block of _LP_BLOCK
    entries at a time (:func:`_lp_lanes_block`)."""
    n = v.shape[0]
    todo = np.empty(_LP_BLOCK, dtype=np.bool_)
    xs = np.empty(_LP_BLOCK, dtype=v.dtype)
    bad = 0
    for j0 in range(0, n, _LP_BLOCK):
        bad += _lp_lanes_block(v, w, out, d, j0, min(j0 + _LP_BLOCK, n), todo, xs, passfn, c, check)
    return bad


@_inline
def _lp_lanes_par(v, w, out, d, passfn, c, check):
    """_lp_lanes_seq over chunks of blocks on Numba's threads."""
    n = v.shape[0]
    nb_ = (n + _LP_BLOCK - 1) // _LP_BLOCK
    nch = min(nb_, 64)
    bad = np.zeros(nch, dtype=np.int64)
    for ch in prange(nch):
        todo = np.empty(_LP_BLOCK, dtype=np.bool_)
        xs = np.empty(_LP_BLOCK, dtype=v.dtype)
        for b in range(ch * nb_ // nch, (ch + 1) * nb_ // nch):
            j0 = b * _LP_BLOCK
            bad[ch] += _lp_lanes_block(v, w, out, d, j0, min(j0 + _LP_BLOCK, n), todo, xs, passfn, c, check)
    return bad.sum()


@_inline
def _lp_entry(x, lam, i, c):
    """_lp_one at lam with c = (p, tau, beta, p_code) (i unused)."""
    return _lp_one(x, lam, c[0], c[1], c[2], c[3])


@_pjit
def _lp_par(v, lam, out, c, check):
    return _map_par(v, lam, out, _lp_entry, c, check)


@_jit
def _lp_seq(v, lam, out, c, check):
    return _map_seq(v, lam, out, _lp_entry, c, check)


@_jit
def _lp_entry_call(x, lam, i, c):
    """_lp_entry, not inlined: the lanes' rare scalar entries (inlined, its
    loops made each lane kernel's compilation several times longer)."""
    return _lp_entry(x, lam, i, c)


@_jit
def _lp_half_pass(vb, w, ob, db, j0, todo, c, check):
    return _lp_lanes_pass(vb, w, ob, db, j0, todo, _lp_half_lane, _lp_entry_call, c, False, check)


@_jit
def _lp_two_thirds_pass(vb, w, ob, db, j0, todo, c, check):
    return _lp_lanes_pass(vb, w, ob, db, j0, todo, _lp_two_thirds_lane, _lp_entry_call, c, False, check)


@_jit
def _lp_half_seq(v, lam, out, c, check):
    return _lp_lanes_seq(v, lam, out, v, _lp_half_pass, c, check)


@_pjit
def _lp_half_par(v, lam, out, c, check):
    return _lp_lanes_par(v, lam, out, v, _lp_half_pass, c, check)


@_jit
def _lp_two_thirds_seq(v, lam, out, c, check):
    return _lp_lanes_seq(v, lam, out, v, _lp_two_thirds_pass, c, check)


@_pjit
def _lp_two_thirds_par(v, lam, out, c, check):
    return _lp_lanes_par(v, lam, out, v, _lp_two_thirds_pass, c, check)


#: lp's kernels (serial, parallel) by p_code: other p (the scalar map of
#: _lp_entry), p = 1/2 and p = 2/3 (the vectorised blocks); one compiled
#: function each, so that a call compiles only its own p's code
_LP_KERNELS = ((_lp_seq, _lp_par), (_lp_half_seq, _lp_half_par), (_lp_two_thirds_seq, _lp_two_thirds_par))


@_inline
def _hard_one(x, thr, i, c):
    """x where |x| > thr, else 0 (<=: NaN passes through, as in the
    reference; i and c unused)."""
    return 0.0 if abs(np.float64(x)) <= thr else x


@_pjit
def _hard_par(v, thr, out, check):
    return _map_par(v, thr, out, _hard_one, 0.0, check)


@_jit
def _hard_seq(v, thr, out, check):
    return _map_seq(v, thr, out, _hard_one, 0.0, check)


def lp(v, lam, p, *, parallel=True, out=None, check_finite=False):
    """Global minimiser of 1/2 (x - v)^2 + lam |x|^p, elementwise.
    ``check_finite``: see :func:`_run_map`."""
    lam = float(lam)
    p = float(p)
    out = _result(v, out)
    if lam == 0:
        if check_finite and _count_not_finite(v):
            raise NonFiniteInput("input contains NaN or Inf")
        out[...] = v
        return out
    if p == 0:
        # keep v iff v^2/2 > lam, at sqrt(2 lam) correctly rounded, as the
        # reference thresholds (also where 2 lam overflows)
        thr = np.full(1, hard_threshold(lam))
        _run_map(_hard_seq, _hard_par, parallel, v, thr, out, check_finite)
        return out
    if p == 1:
        return weighted_l1(v, np.full(1, lam, dtype=np.float64), parallel=parallel, out=out, check_finite=check_finite)
    # tau = (2-p)/(2(1-p)) (2 lam (1-p))^(1/(2-p)), without overflowing 2 lam (1-p)
    e = 1.0 / (2.0 - p)
    t2 = 2.0 * lam * (1.0 - p)
    base = t2**e if t2 < np.inf else (2.0 * (1.0 - p)) ** e * lam**e
    tau = (2.0 - p) / (2.0 * (1.0 - p)) * base
    beta = (lam * p * (1.0 - p)) ** e
    p_code = 1 if p == 0.5 else (2 if p == 2.0 / 3.0 else 0)
    _run_map(*_LP_KERNELS[p_code], parallel, v, np.full(1, lam), out, check_finite, (p, tau, beta, p_code))
    return out


def lp_checked(v, w, step: float, check_finite: bool, *, parallel=True):
    """The public lp prox of a C-contiguous float32/float64 ``v`` (any
    shape, entry by entry) with ``w`` = (lam, p) (float64, lam >= 0,
    0 <= p <= 1) and a normal float ``step``: the threshold step * lam
    (:func:`_lane_threshold`; a Python float, not rounded to v's dtype, as
    proxlib._range passes a scalar threshold) and the general path's kernel
    (:func:`lp`), its result bit for bit; None where that path must decide
    (lam or p out of range or not finite, step * lam outside [2^-976,
    2^976] and not 0: within 2^24 of proxlib._range's range for lp, NaN or
    Inf in v with ``check_finite``, an empty v)."""
    if v.size == 0 or w.shape != (2,):
        return None
    lam, p = float(w[0]), float(w[1])
    t = _lane_threshold(step, (lam,), 2.0**976)
    if t is None or 0.0 < t < 2.0**-976 or not 0.0 <= p <= 1.0:
        return None
    try:
        return lp(v.reshape(-1), t, p, parallel=parallel, check_finite=check_finite).reshape(v.shape)
    except NonFiniteInput:
        return None


# the elementwise kernels whose check_finite is fused into their pass (as
# group_lasso's and growl's are: proxlib._registry.Plan asks, per kernel)
for _kernel in (weighted_l1, weighted_l2sq, lp):
    _kernel.checks_finite = True
del _kernel


# ------------------------------------------------------------------ prepared in-place calls


#: out = x * s for vectors (the products rounded to out's dtype; in place
#: when out is x; no floating-point error raised): the in-place runners'
#: thresholds and hint rescaling (proxlib.backends.torch_dev)
scale_row = _scale_row


def threshold_former(ts, like):
    """A ``form(ts, step, like)`` for :class:`proxlib._range.AtStep`:
    :func:`proxlib._range.thresholds_in_range` of the terms ``ts`` for the
    NumPy data ``like`` (float32 or float64), the same bits with fewer
    Python operations (an in-place runner whose step changes at every step
    under a learning-rate schedule, proxlib.backends.torch_dev, where each
    Python operation after a training step costs about a microsecond and
    each NumPy call 10-15 us):

    * each array ``a * s`` is written by one compiled call into a vector
      of like's dtype kept for its term: the products and the rounding of
      NumPy's ``(a * s).astype(...)``;
    * where every term is of degree 1 or 2 with a known, finite largest
      entry (``top``) and the step is a normal float, each scalar part s is
      the one-call lanes' product (:func:`_lane_threshold`: IEEE products in
      _range.product's order, every partial product normal, within 2^24 of
      _range's range for the term's degree and top), the number _range
      forms there; any other step takes _range's own rule.

    The vectors are overwritten when the step changes: for a caller that
    has used the previous thresholds (one runner's).  None unless every
    array is a C-contiguous float64 NumPy vector."""
    if not all(t.array is None or (isinstance(t.array, np.ndarray) and t.array.ndim == 1 and t.array.dtype == np.float64
                                   and t.array.flags.c_contiguous) for t in ts):
        return None
    kept = [None if t.array is None else np.empty(t.array.shape[0], dtype=like.dtype) for t in ts]

    def scaled(i, a, s, data):
        out = kept[i]
        _scale_row(a, s, out)
        return out

    def general(ts_, step, data):
        return thresholds_in_range(ts_, step, data, scaled)

    limits = []  # (per term: the largest s its lane product may reach)
    for t in ts:
        top = 1.0 if t.array is None else t.top
        if t.degree not in (1, 2) or top is None or not 0.0 <= top < np.inf:
            return general
        lane_top = (_DEGREE1_TOP if t.degree == 1 else _DEGREE2_TOP)[like.dtype]
        limits.append(lane_top / top if top > 0.0 else np.inf)

    def form(ts_, step, data):
        if not 2.0**-1022 <= step < np.inf:
            return general(ts_, step, data)
        thr = []
        for i, t in enumerate(ts_):
            s = _lane_threshold(step, t.scalars, limits[i])
            if s is None or s == 0.0:  # (a zero factor: _range's rule, NumPy's a * 0)
                return general(ts_, step, data)
            thr.append(s if t.array is None else scaled(i, t.array, s, data))
        return tuple(thr)

    return form


_ROUTES = {
    "group_lasso": _group_lasso_route,
    "growl": _growl_route,
    "exclusive_lasso": _exclusive_route,
    "group_exclusive": lambda W, out, parallel, hint=None: _exclusive_route(W, out, parallel, hint, True),
    "weighted_l1": _weighted_l1_route,
    "weighted_l2sq": _weighted_l2sq_route,
}


def serial_in_place(name: str, W, fixed: tuple = (), hint=None):
    """Kernel ``name`` prepared to overwrite ``W`` serially, again and again:
    ``run(thresholds, check_finite)`` does what ``name(W, *thresholds,
    *fixed, [check_finite,] parallel=False, out=W)`` does (the same kernels,
    bit for bit), with the route (rows or columns) and the scratch chosen
    once: for a caller that keeps W (a training step's parameter), where the
    public function's checks and choices cost as much as a small layer's
    kernel after a training step has flushed the caches.  ``hint``: the
    exclusive operators' (:func:`_check_hint`).  GrOWL's runners keep the
    sorted order of the row norms from call to call (:func:`_owl_small`'s
    ``order``: sorted again by insertion, O(n + moves), where the argsort
    was O(n log n) with unpredictable branches).  ``check_finite`` is
    ignored by the elementwise kernels, which do not check their input."""
    route = _ROUTES.get(name)
    if route is not None and W.size:
        return route(W, W, False, hint)
    kernel = globals()[name]
    # the convolutions' channel rows: the kernels' own calls, with the checks
    # of ``out`` and the scratch made once (a NumPy call after a training step
    # costs 10-15 us: on LeNet-5's two convolutions, as much as their kernels)
    if name == "growl_channels":  # (with _owl_small's order kept from call to call)
        order = np.full(W.shape[1], -1, dtype=np.int64)
        if W.size:
            return lambda thr, check_finite: _growl_channels_into(W, thr[0], check_finite, W, order)
        return lambda thr, check_finite: kernel(W, *thr, check_finite, out=W, order=order)
    if name == "group_lasso_channels":
        nrm = np.empty(W.shape[1], dtype=np.float64)
        if W.size:
            return lambda thr, check_finite: _check_norms(_group_lasso_mid(W, thr[0], W, nrm, check_finite))
        return lambda thr, check_finite: kernel(W, *thr, check_finite, out=W)
    return lambda thr, check_finite: kernel(W, *thr, *fixed, parallel=False, out=W)


# ------------------------------------------------------------------ separable, in a diagonal metric
# The weighted l1 and weighted squared l2 in a metric d: the float64
# operations of _metric_kernels' array code, entry by entry (each entry's
# result is that of the same operations on the same values: the same bits),
# in one serial pass instead of a dozen array operations, each a pass with
# its float64 temporaries (on the CPU tensors of an Adam training step, the
# array code cost 3x the training step of the benchmark's MLP for a weighted
# l1: the mixed float32/float64 operations run torch's slow casting loops).


_FMAX64 = _FMAX["float64"]  # (the array code's clip bound)


@_inline
def _wl1_metric_one(x, di, wi):
    """_metric_kernels.weighted_l1_metric on one entry: t = min(w/d, max
    float64) (a NaN quotient stays NaN, as clip leaves it), then
    signed_like(x, clip(|x| - t, min=0)) in float64."""
    t = wi / np.float64(di)
    if t > _FMAX64:
        t = _FMAX64
    v = np.float64(x)
    r = abs(v) - t
    if r < 0.0:
        r = 0.0
    return -r if v < 0.0 else (r if v >= 0.0 else v)


@_inline
def _wl2_metric_one(x, di, wi):
    """_metric_kernels.weighted_l2sq_metric on one entry: t = w/d, then
    (x/2) / (1/2 + t) where t < inf, else (x ((d 2^1021) / w)) 2^-1022
    (float64)."""
    d64 = np.float64(di)
    v = np.float64(x)
    t = wi / d64
    if t < np.inf:
        return (v * 0.5) / (t + 0.5)
    return (v * ((d64 * 2.0**1021) / wi)) * 2.0**-1022


@_jit
def _lp_metric_one(x, di, lam, lpc):
    """_metric_kernels.lp_metric on one entry, 0 <= p <= 1, lam > 0: the
    global lp prox of x with lam_i = lam / d_i (p = 1: soft thresholding;
    p = 0: hard, at sqrt(2 lam_i)), lam_i outside [2^-1000, 2^1000] solved
    at the entry's scale 2^k (_metric_kernels._lp_at_scale), the solve the
    Euclidean kernel's (:func:`_lp_one`).  For p other than 1/2 and 2/3
    the array code's operations; its powers are NumPy's (or torch's),
    these libm's: the same to an ulp or so of each power.  For p = 1/2 and
    2/3 :func:`_lp_root` (no power: within a few ulps of the array code).
    ``lpc``: (p, p_code, r, c_tau, c_beta, c_pow), the per-call constants
    (:func:`_lp_constants`).  For p = 1/2 and 2/3 most entries in training
    lie below the threshold, and those far enough below are 0 by an
    integer power of |x| (:func:`_lp_surely_below`), before _lp_root's
    divisions and root: the same bits."""
    p, p_code, r, c_tau, c_beta, c_pow = lpc
    v64 = np.float64(x)
    av = abs(v64)
    d64 = np.float64(di)
    if p == 1.0:  # soft thresholding at lam / d_i: the weighted l1's entry, the same bits
        return _wl1_metric_one(x, di, lam)
    li = lam / d64
    k = 0
    if not (li >= _LP_LO and li <= _LP_HI) and lam > 0:  # _lp_at_scale
        ml, el = math.frexp(lam)
        md, ed = math.frexp(d64)
        E = np.float64(el - ed)
        kf = np.rint(E / (2.0 - p))
        hi, lo = _two_product(kf, 2.0 - p)
        q = (E - hi) - lo
        qi = math.floor(q)
        li = math.ldexp((ml / md) * 2.0 ** (q - qi), int(qi))
        k = int(kf)
    # NaN, +-inf, and entries far above the threshold (2^1020 at their scale) pass through
    if not av < np.inf or av >= (2.0**1020 if k == 0 else math.ldexp(2.0**1020, k)):
        return v64
    vs = v64 if k == 0 else math.ldexp(v64, -k)
    if p == 0.0:
        return v64 if abs(vs) > _sqrt2x(li) else 0.0
    if p_code != 0:
        if _lp_surely_below(abs(vs), li, p_code, c_pow):
            return 0.0  # (_lp_root's 0: c > its pre-selection's bound, at any scale k)
        x = _lp_one(vs, li, p, 0.0, 0.0, p_code)
    else:
        lr = li**r
        x = _lp_one(vs, li, p, c_tau * lr, c_beta * lr, p_code)
    return x if k == 0 else math.ldexp(x, k)


def _lp_constants(p: float) -> tuple:
    """(p, p_code, r, c_tau, c_beta, c_pow) of :func:`_lp_metric_one`:
    r = 1/(2-p), tau = c_tau lam^r and beta = c_beta lam^r formed as the
    array code forms them (its constants are Python's, as these); for
    p = 1/2 (p_code 1) c_pow = (c_tau (1 - 1e-9))^3, for p = 2/3 (p_code 2)
    its 4th power (:func:`_lp_surely_below`); 0 otherwise."""
    if p in (0.0, 1.0):
        return (p, 0, 0.0, 0.0, 0.0, 0.0)
    r = 1.0 / (2.0 - p)
    p_code = 1 if p == 0.5 else (2 if p == 2.0 / 3.0 else 0)
    c_tau = (2.0 - p) / (2.0 * (1.0 - p)) * (2.0 * (1.0 - p)) ** r
    c_pow = (c_tau * (1.0 - 1e-9)) ** (3 if p_code == 1 else 4) if p_code else 0.0
    return (p, p_code, r, c_tau, (p * (1.0 - p)) ** r, c_pow)


_LP_BELOW_MARGIN = 1.0 - 2.0**-40  # _lp_surely_below's relative margin
_LP_BELOW_RANGE = 2.0**300  # and the range of lam_i it takes


@_inline
def _lp_surely_below(av, li, p_code, c_pow):
    """Whether av <= tau (1 - 1e-9) certainly holds, tau = c_tau li^r the
    threshold (the array code's pre-selection, with libm's pow, rounded):
    there the entry is 0 (:func:`_lp_root`: its c lies at least 1.5e-9
    relative above c_star, so it is not kept or loses the comparison with
    0 by far more than its rounding), decided without a power or root:
    for p = 1/2 (r = 2/3) av^3 against
    (c_tau (1 - 1e-9))^3 li^2, for p = 2/3 (r = 3/4) av^4 against
    (c_tau (1 - 1e-9))^4 li^3, with li in [2^-300, 2^300] (no over- or
    underflow of the right side).  Each side is rounded a few times (c_pow
    included, and the pre-selection's own tau a few more, its pow within an
    ulp): a relative error of about 1e-15 in all, far inside the margin
    2^-40 (9.1e-13) asked for here.  An av^k that underflows lies far below
    a right side of at least 2^-1200 c_pow (it holds, correctly); one that
    overflows is not below.  False (undecided: the caller forms the power)
    elsewhere and near the threshold."""
    if not (li >= 1.0 / _LP_BELOW_RANGE and li <= _LP_BELOW_RANGE):
        return False
    a2 = av * av
    if p_code == 1:
        return a2 * av < (c_pow * (li * li)) * _LP_BELOW_MARGIN
    return a2 * a2 < (c_pow * (li * li * li)) * _LP_BELOW_MARGIN


@_inline
def _sqrt2x(t):
    """_metric_kernels._sqrt2x: sqrt(2 t) without overflow of 2 t."""
    return math.sqrt(2.0 * t) if t <= 2.0**1022 else 2.0 * math.sqrt(0.5 * t)


# The maps (_map_seq, _map_par) in the metric d: one kernel per prox, so that
# the weighted l1's and l2's loops stay free of lp's calls, and vectorised.


@_inline
def _wl1_metric_at(x, wi, i, d):
    return _wl1_metric_one(x, d[i], wi)


@_inline
def _wl2_metric_at(x, wi, i, d):
    return _wl2_metric_one(x, d[i], wi)


@_inline
def _lp_metric_at(x, wi, i, c):
    """(c = (d,) + lp's constants, :func:`_lp_constants`: one flat tuple,
    as a parallel loop takes no tuple inside a tuple)"""
    return _lp_metric_one(x, c[0][i], wi, c[1:])


@_jit
def _wl1_metric_seq(v, w, out, d):
    _map_seq(v, w, out, _wl1_metric_at, d, False)


@_pjit
def _wl1_metric_par(v, w, out, d):
    _map_par(v, w, out, _wl1_metric_at, d, False)


@_jit
def _wl2_metric_seq(v, w, out, d):
    _map_seq(v, w, out, _wl2_metric_at, d, False)


@_pjit
def _wl2_metric_par(v, w, out, d):
    _map_par(v, w, out, _wl2_metric_at, d, False)


@_jit
def _lp_metric_seq(v, w, out, c):
    _map_seq(v, w, out, _lp_metric_at, c, False)


@_pjit
def _lp_metric_par(v, w, out, c):
    _map_par(v, w, out, _lp_metric_at, c, False)


@_jit
def _lp_metric_call(x, wi, i, c):
    """_lp_metric_at, not inlined (as _lp_entry_call)."""
    return _lp_metric_at(x, wi, i, c)


@_jit
def _lp_half_metric_pass(vb, w, ob, db, j0, todo, c, check):
    return _lp_lanes_pass(vb, w, ob, db, j0, todo, _lp_half_lane, _lp_metric_call, c, True, check)


@_jit
def _lp_two_thirds_metric_pass(vb, w, ob, db, j0, todo, c, check):
    return _lp_lanes_pass(vb, w, ob, db, j0, todo, _lp_two_thirds_lane, _lp_metric_call, c, True, check)


@_jit
def _lp_half_metric_seq(v, w, out, c):
    _lp_lanes_seq(v, w, out, c[0], _lp_half_metric_pass, c, False)


@_pjit
def _lp_half_metric_par(v, w, out, c):
    _lp_lanes_par(v, w, out, c[0], _lp_half_metric_pass, c, False)


@_jit
def _lp_two_thirds_metric_seq(v, w, out, c):
    _lp_lanes_seq(v, w, out, c[0], _lp_two_thirds_metric_pass, c, False)


@_pjit
def _lp_two_thirds_metric_par(v, w, out, c):
    _lp_lanes_par(v, w, out, c[0], _lp_two_thirds_metric_pass, c, False)


#: lp_metric's kernels by p_code, as _LP_KERNELS
_LP_METRIC_KERNELS = ((_lp_metric_seq, _lp_metric_par), (_lp_half_metric_seq, _lp_half_metric_par),
                      (_lp_two_thirds_metric_seq, _lp_two_thirds_metric_par))


_SEPARABLE_METRIC = ("weighted_l1_metric", "weighted_l2sq_metric", "lp_metric")
# each one's kernels (serial, parallel): out_i = its prox of v_i in the metric
# d_i at the weight w_i (w of one entry broadcast; out may be v)
_SEPARABLE_METRIC_KERNELS = ((_wl1_metric_seq, _wl1_metric_par), (_wl2_metric_seq, _wl2_metric_par),
                             (_lp_metric_seq, _lp_metric_par))


def _separable_metric(v, d, w, kind, parallel, out, p=1.0):
    """The compiled pass of kernel ``kind`` (an index into
    _SEPARABLE_METRIC) for v and d of one shape (w: one weight, or one per
    entry; a number is one weight), into ``out`` or a new array; the array
    code (:mod:`._metric_kernels`) where v, d or out are not contiguous."""
    w = np.ascontiguousarray(w, dtype=np.float64).reshape(-1)
    result = _result(v, out)
    if not (v.flags.c_contiguous and d.flags.c_contiguous and result.flags.c_contiguous and w.shape[0] in (1, v.size)):
        if w.shape[0] > 1:
            weight = w.reshape(v.shape)
        elif kind == 2:  # (a 0-d array: taken entry by entry, as the pass does; a number 0 would be copied)
            weight = w.reshape(())
        else:
            weight = w
        args = (v, d, weight) + ((p,) if kind == 2 else ())
        result[...] = getattr(_mk, _SEPARABLE_METRIC[kind])(*args)
        return result
    d = d.reshape(-1)
    c = (d,) + _lp_constants(float(p)) if kind == 2 else d
    pair = _LP_METRIC_KERNELS[c[2]] if kind == 2 else _SEPARABLE_METRIC_KERNELS[kind]
    kernel = _serial_or_parallel(*pair, parallel, v.size)
    kernel(v.reshape(-1), w, result.reshape(-1), c)
    return result


def weighted_l1_metric(v, d, w, *, parallel=True, out=None):
    r"""argmin 1/2 sum_i d_i (x_i - v_i)^2 + sum_i w_i |x_i| = sign(v) (|v| - w/d)_+:
    :func:`._metric_kernels.weighted_l1_metric`'s float64 operations entry
    by entry, rounded once to v's dtype (the same bits), in one pass.
    ``d`` of v's shape (float32 or float64), ``w`` one weight or one per
    entry; ``out`` (v's shape and dtype; may be v) receives the result."""
    return _separable_metric(v, d, w, 0, parallel, out)


def weighted_l2sq_metric(v, d, w, *, parallel=True, out=None):
    r"""argmin 1/2 sum_i d_i (x_i - v_i)^2 + sum_i w_i x_i^2 = v / (1 + 2 w/d):
    :func:`._metric_kernels.weighted_l2sq_metric`'s float64 operations
    entry by entry, rounded once (the same bits), in one pass; as
    :func:`weighted_l1_metric`."""
    return _separable_metric(v, d, w, 1, parallel, out)


def lp_metric(v, d, lam, p, *, parallel=True, out=None):
    r"""argmin 1/2 sum_i d_i (x_i - v_i)^2 + lam sum_i |x_i|^p, 0 <= p <= 1:
    :func:`._metric_kernels.lp_metric`'s float64 operations entry by entry
    (:func:`_lp_metric_one`: each entry's lp prox at lam / d_i, at its own
    scale where lam / d_i is out of range), in one pass; its powers are
    libm's, so the result is the array code's to an ulp or so of those,
    and for p = 1/2 and 2/3 (:func:`_lp_root`, no powers) to a few ulps
    (an entry at a tie between 0 and x* may go either way with them).
    ``lam`` one value >= 0 or one per entry; otherwise as
    :func:`weighted_l1_metric`.  O(n) with a few Newton steps per entry
    above the threshold; for p = 1/2 and 2/3 a vectorised pass over blocks
    of entries (:func:`_lp_lanes_block`; p = 1/2: 13.3 -> 1.3-1.9 ms on the
    235,200 float32 weights of an MLP's Adam step, 61% of them above the
    threshold, serial, 2-core AMD EPYC Zen 4)."""
    if not hasattr(lam, "shape") and float(lam) == 0.0:  # the array code's copy (-0 stays -0)
        result = _result(v, out)
        result[...] = v
        return result
    return _separable_metric(v, d, lam, 2, parallel, out, float(p))


# ------------------------------------------------------------------ the group lasso in a diagonal metric
# _metric_kernels.group_lasso_metric row by row: each row's scales, norms,
# bracket and safeguarded Newton search (_metric_kernels._root's steps, in
# the same order) on float64 copies of the row in cache, where the array code
# makes a dozen passes over every row per search step and waits for the
# slowest row.  The same expressions; the sums over a row add in another
# order (NumPy's pairwise sums, torch's blocked ones: each backend has its
# own), so the result agrees with the array code's to the accuracy of those
# sums (a few units in the last place), not bit for bit.

# the array code's constants (named apart: this module has an _SPLIT and a
# _MAX_ROOT_ITER of its own)
from ._metric_kernels import _DROP as _METRIC_DROP  # noqa: E402
from ._metric_kernels import _EPS as _METRIC_EPS  # noqa: E402
from ._metric_kernels import _MAX_ROOT_ITER as _METRIC_MAX_ITER  # noqa: E402
from ._metric_kernels import _SPLIT as _DEKKER  # noqa: E402
from ._metric_kernels import _TINY as _ROOT_FLOOR  # noqa: E402
from ._metric_kernels import _LP_HI, _LP_LO  # noqa: E402


@_jit
def _pow2_scale(amax):
    """_xp_kernels.row_scale of a row whose largest entry is ``amax``
    (finite): the power of two s with amax / s in [1, 2); 1 where amax is
    not > 0."""
    if not amax > 0.0:
        return 1.0
    return math.ldexp(1.0, math.frexp(amax)[1] - 1)


@_inline
def _over_pow2_by(x, s, f):
    """x / s for a power of two s: x f with f = 1/s where that is a float
    (f != 0: the same correctly rounded quotient; vectorised, where a
    division is not), else divided (f = 0)."""
    return x * f if f != 0.0 else x / s


@_inline
def _pow2_inverse(s):
    """1/s for a power of two s >= 2^-1022 (a float), else 0 (see _over_pow2_by)."""
    return 1.0 / s if s >= 2.0**-1022 else 0.0


@_inline
def _ordered_key(v):
    """The float64 v's bits as an int64 ordered as the floats: a negative
    v's magnitude bits flipped; -0 taken as +0 (v + 0).  A NaN's key lies
    beyond the infinity of its sign (above inf's, below -inf's)."""
    b = _bits(v + 0.0)
    return b ^ ((b >> 63) & np.int64(0x7FFFFFFFFFFFFFFF))


@_inline
def _from_ordered_key(k):
    """The float64 whose _ordered_key is k."""
    return _from_bits(k ^ ((k >> 63) & np.int64(0x7FFFFFFFFFFFFFFF)))


@_jit
def _scale_metric_row(X, Dn, sv, sd, V):
    """V = |X| / sv and Dn <- Dn / sd (powers of two: _over_pow2_by), in one
    pass that also returns max_i |Dn_i V_i| (no NaN; 0 for an empty row),
    an integer maximum of the products' magnitude bits (see _absmax)."""
    fv = _pow2_inverse(sv)
    fd = _pow2_inverse(sd)
    top = np.int64(0)
    for i in range(X.shape[0]):
        v = _over_pow2_by(abs(X[i]), sv, fv)
        e = _over_pow2_by(Dn[i], sd, fd)
        V[i] = v
        Dn[i] = e
        top = max(top, _magnitude_bits(e * v))
    return _magnitude_of_bits(top)


@_jit
def _metric_row_read(w, d, X, Dn):
    """X = w, Dn = d in float64 (one read of each: they may be strided) and,
    in the same pass, (finite, max |X|, max Dn, min Dn): finite False iff
    an entry of either is NaN or +-inf (then the extremes are not to be
    used).  The extremes are integer ones of the values' bits, which LLVM
    vectorises (the magnitudes' bits for |X|, a NaN's and inf's at inf's
    and above; _ordered_key for Dn, whose NaN keys lie beyond the
    infinities'), where float extrema under IEEE rules, and the sum of
    x 0 + d 0 that tested finiteness before, stayed scalar: 0.3x the time
    of that probe and the two extrema passes on 784 rows of 300 float32."""
    top = np.int64(0)
    hi = _ordered_key(-np.inf)
    lo = _ordered_key(np.inf)
    for i in range(w.shape[0]):
        x = np.float64(w[i])
        e = np.float64(d[i])
        X[i] = x
        Dn[i] = e
        top = max(top, _magnitude_bits(x))
        k = _ordered_key(e)
        hi = max(hi, k)
        lo = min(lo, k)
    finite = top < _INF_BITS and hi < _ordered_key(np.inf) and lo > _ordered_key(-np.inf)
    return finite, _magnitude_of_bits(top), _from_ordered_key(hi), _from_ordered_key(lo)


# The row sums below: the terms formed by one loop (plain IEEE rules,
# vectorised: no reduction in it) into a scratch row, then summed by a
# reassociating loop (_pure_sum): reassociation on the whole would also let
# LLVM regroup the products (e.g. (a f)^2 as a^2 f^2, which overflows for a
# scale f beyond 2^511), which the module's rule (reassoc on pure sums only)
# forbids.


@_rjit
def _pure_sum(T):
    """sum_i T_i (non-negative terms; any order)."""
    acc = 0.0
    for i in range(T.shape[0]):
        acc += T[i]
    return acc


@_jit
def _product_sumsq(P, Q, zs, T):
    """sum_i (|P_i Q_i| / zs)^2, zs a power of two (>= 2^-1022: by 1/zs);
    T: scratch."""
    f = _pow2_inverse(zs)
    for i in range(P.shape[0]):
        b = _over_pow2_by(abs(P[i] * Q[i]), zs, f)
        T[i] = b * b
    return _pure_sum(T)


@_jit
def _gl_metric_step(V, Mu, s, T1, T2, T3):
    """(sum_i w_i^2, sum_i w_i^2 / (s + mu_i), sum_i w_i^2 / (s + mu_i)^2)
    with w_i = v_i / (s + mu_i): _metric_kernels._group_lasso_s's
    g_and_slope sums, and the third for the curvature (T1, T2, T3:
    scratch)."""
    for i in range(V.shape[0]):
        r = 1.0 / (s + Mu[i])
        w = V[i] * r
        w2 = w * w
        T1[i] = w2
        rw2 = r * w2
        T2[i] = rw2
        T3[i] = r * rw2
    return _pure_sum(T1), _pure_sum(T2), _pure_sum(T3)


@_jit
def _gl_metric_mu(Dn, a_s, Mu):
    """Mu_i = a_s / Dn_i (vectorised division) and, in the same pass,
    (max_i Mu_i, min_i Mu_i) ((-inf, inf) for an empty row): integer
    extrema of _ordered_key (Mu holds no NaN: a_s > 0 finite, Dn none),
    which LLVM vectorises (0.5x the time of four partial float extrema on
    784 rows of 300, when they were a pass of their own)."""
    hi = _ordered_key(-np.inf)
    lo = _ordered_key(np.inf)
    for i in range(Dn.shape[0]):
        mu = a_s / Dn[i]
        Mu[i] = mu
        k = _ordered_key(mu)
        hi = max(hi, k)
        lo = min(lo, k)
    return _from_ordered_key(hi), _from_ordered_key(lo)


@_jit
def _metric_row_scales(w, d, X, V, Dn, T):
    """The first stage of _metric_kernels.group_exclusive_metric on one row:
    X = w and the scaled rows V = |w| / sv, Dn = d / sd in float64 (w and d
    read once: they may be strided), and ||Dn V|| as nrm zs
    (_xp_kernels.scaled_row_norms, its sum in its own order; T: scratch).  Returns
    (sv, sd, nrm, zs, max Dn, min Dn), nrm NaN for a row of w or d holding NaN or +-inf
    (there the array code's norm is not finite); on the others no NaN
    arises, so the maxima and minima need no NaN rule."""
    finite, xmax, dmax, dmin = _metric_row_read(w, d, X, Dn)
    if not finite:
        return 1.0, 1.0, np.nan, 1.0, np.nan, np.nan
    sv = _pow2_scale(xmax)
    sd = _pow2_scale(dmax)
    zs = _pow2_scale(_scale_metric_row(X, Dn, sv, sd, V))
    # (the scaled metric's extremes are the extremes scaled: the quotient by
    # a power of two, rounded, is monotone)
    f = _pow2_inverse(sd)
    return sv, sd, math.sqrt(_product_sumsq(Dn, V, zs, T)), zs, _over_pow2_by(dmax, sd, f), _over_pow2_by(dmin, sd, f)


@_inline
def _np_sign(x):
    """np.sign(x) of a float64: 0 for +-0 (and for NaN, which np.sign keeps;
    the rows that reach the metric kernels' output maps hold none)."""
    return 1.0 if x > 0 else (-1.0 if x < 0 else 0.0)


@_jit
def _metric_row_out(X, U, sv, out):
    """out = sign(x) |x| with |x| = U sv (_np_sign)."""
    for i in range(X.shape[0]):
        out[i] = _np_sign(X[i]) * (U[i] * sv)


@_jit
def _two_product(a, b):
    """_metric_kernels.two_product (Dekker, no fused multiply-add): p = fl(a b),
    p + q = a b exactly."""
    c = _DEKKER * a
    ah = c - (c - a)
    al = a - ah
    c = _DEKKER * b
    bh = c - (c - b)
    bl = b - bh
    p = a * b
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


@_jit
def _pair_before(Z, Zlo, i, j):
    """Whether pair i comes before pair j: (Z, Zlo) decreasing
    lexicographically, then the index increasing (a total order)."""
    if Z[i] != Z[j]:
        return Z[i] > Z[j]
    if Zlo[i] != Zlo[j]:
        return Zlo[i] > Zlo[j]
    return i < j


@_jit
def _radix_sort_window(keys, tmp, cap):
    """Sorts non-negative int64 ``keys`` stably by the top 8 d bits of
    their offsets k - lo from the least, lo, of the keys below ``cap``
    (those span less than 2^(8 d) units of 2^shift; the keys >= cap go
    last), by d passes of an 8-bit least-significant-digit radix sort,
    d = 2 for up to 1024 keys, else 3 (``tmp``: int64 scratch as long).
    Offsets, not the keys' own top bits: keys on either side of a power of
    two (0x3ff... and 0x400...) differ in their highest bits, where their
    range may be narrow.  Keys that agree in the window keep their order:
    the order of all their bits is for the caller's insertion pass to
    finish (:func:`_pair_order`), which has little to do when the window
    separates most keys (784 rows of 300 products d|w|: 1.8-1.9 ms with or without zeros or an entry 1e30,
    where sorting all their bits, six or seven passes of 256 buckets, took
    3.4-4.4 ms; 64 rows of 4608: 2.3-2.7 ms against 3.8-4.9).  Where a
    dense cluster shares a bucket (keys spanning hundreds of octaves, and
    many of them within a few units in the last place) the window leaves
    many out of order; the caller then sorts all their bits."""
    n = keys.shape[0]
    lo = cap
    hi = np.int64(0)
    for i in range(n):
        k = keys[i]
        below = k < cap
        lo = min(lo, k if below else cap)
        hi = max(hi, k if below else np.int64(0))
    if not lo < hi:
        return
    span = hi - lo
    hb = 0
    while (span >> (hb + 1)) != 0:
        hb += 1
    nd = 2 if n <= 1024 else 3
    shift = max(hb + 1 - 8 * nd, 0)
    top = (1 << (8 * nd)) - 1
    hist = np.zeros((nd, 256), dtype=np.int64)
    for i in range(n):
        u = (keys[i] - lo) >> shift if keys[i] < cap else top
        for d in range(nd):
            hist[d, (u >> (8 * d)) & 255] += 1
    src, dst = keys, tmp[:n]
    at = np.empty(256, dtype=np.int64)
    for d in range(nd):
        acc = 0
        for r in range(256):
            at[r] = acc
            acc += hist[d, r]
        for i in range(n):
            k = src[i]
            u = (k - lo) >> shift if k < cap else top
            r = (u >> (8 * d)) & 255
            dst[at[r]] = k
            at[r] += 1
        src, dst = dst, src
    if nd % 2 == 1:
        _copy_row(src, keys)


@_jit
def _descents(keys):
    """#{i: keys_i > keys_i+1}."""
    c = 0
    for i in range(keys.shape[0] - 1):
        c += 1 if keys[i] > keys[i + 1] else 0
    return c


_PAIR_INSERTION = 24  # rows of at most this many pairs sort their keys by insertion


@_jit
def _pair_order(Z, Zlo, keys, tmp):
    """The order of the pairs (Z_i, Zlo_i) decreasing (lexicographically),
    ties in index order: the array code's two stable argsorts (by Zlo, then
    by Z).  For Z >= 0 (its bits then increase with it): packed int64 keys
    (the complement of Z's bits, its lowest ib bits replaced by the index,
    ib the index's bits) sorted by a window of their bits
    (:func:`_radix_sort_window`; Numba's argsort took 13 us for 300
    entries; by all their bits, :func:`_radix_sort`, where more than one
    key in 32 is then still above its successor; the window is the
    nonzero products': a pruned row's zeros, far from them, would widen
    it), then an insertion pass with the full order puts the rare pairs
    that agree in the window (ties included) in place: on the keys, it
    passes over each key whose Z part exceeds its predecessor's (then its
    Z is below the whole prefix's) without reading Z or Zlo (0.75x the time
    of the sort on 300 rows of 784 products, where it compared every pair
    of neighbours through their indices); a row with Z < 0 (an unchecked
    metric < 0) takes a stable argsort instead.  ``keys``, ``tmp``: int64
    scratch of Z's length.  Rows of at most _PAIR_INSERTION pairs sort the
    keys by insertion instead of the window, whose 2 x 256 buckets cost
    most of a short row's sort (784 rows of 8 pairs: 31 us against 280,
    16: 63 against 310; 32: 280 against 360, 47: 500 against 400)."""
    m = Z.shape[0]
    ib = 1
    while (1 << ib) < m:
        ib += 1
    low_mask = (1 << ib) - 1
    negative = 0
    for i in range(m):
        negative += 0 if Z[i] >= 0.0 else 1
    if negative:
        order = np.argsort(-Z, kind="mergesort")
        for p in range(1, m):  # (insertion: the ties of Z by Zlo and index)
            q = order[p]
            r = p
            while r > 0 and _pair_before(Z, Zlo, q, order[r - 1]):
                order[r] = order[r - 1]
                r -= 1
            order[r] = q
        return order
    for i in range(m):
        keys[i] = ((_INF_BITS - _bits(Z[i])) & ~low_mask) | i
    cap = _INF_BITS & ~low_mask  # (the zeros' keys: at least this)
    if m <= _PAIR_INSERTION:  # a short row: the keys sorted by insertion
        for p in range(1, m):
            k = keys[p]
            r = p
            while r > 0 and keys[r - 1] > k:
                keys[r] = keys[r - 1]
                r -= 1
            keys[r] = k
    else:
        _radix_sort_window(keys, tmp, cap)
        if _descents(keys) * 32 > m:  # the window left many keys out of order: all their bits
            _radix_sort(keys, tmp, ib)
    for p in range(1, m):  # (insertion: nothing moves where the packed order was the full one)
        k = keys[p]
        if (keys[p - 1] >> ib) < (k >> ib):
            continue  # (its Z below the prefix's last, and so below all of the prefix: in place)
        q = k & low_mask
        r = p
        while r > 0 and _pair_before(Z, Zlo, q, keys[r - 1] & low_mask):
            keys[r] = keys[r - 1]
            r -= 1
        keys[r] = k
    return keys & low_mask


@_jit
def _metric_row(w, d, a, b, out, S, K):
    """One row of _metric_kernels.group_exclusive_metric (a = 0: its
    exclusive lasso, b = 0: its group lasso) into ``out`` (which may be
    ``w``): the scales, the thresholds scaled with them (the saturated b's
    shift included), the zero test ||Dn V|| <= a, then the row's case, as
    the array code's cases.  S: float64 scratch rows (_METRIC_SCRATCH, m),
    K: int64 scratch rows (3, m)."""
    m = w.shape[0]
    X, V, Dn = S[0], S[1], S[2]
    sv, sd, nrm, zs, dmx, dmin = _metric_row_scales(w, d, X, V, Dn, S[3])
    if not (nrm < np.inf):  # a row holding NaN or +-inf (or an unchecked metric < 0 overflowing d v): as it is
        _copy_row(X, out)
        return
    p = sv * sd
    a_s = a / p if (p < np.inf and p > 0.0) else (a / sv) / sd  # _divided_by_both
    b_s = b / sd
    shift = 0
    if (b_s > 2.0**900 or (b_s > 2.0**600 and (a_s == 0 or a_s >= 2.0**-500))) and b < np.inf:
        # saturated: solved at b 2^-shift, scaled back (_metric_kernels._saturated)
        es = math.frexp(sd)[1]
        shift = math.frexp(b)[1] - es - 599
        if shift > 0:
            b_s = math.ldexp(b, -shift - (es - 1))
    if not (nrm > a_s / zs and b_s < np.inf):  # ||Dn V|| <= a, or b = inf: x = 0
        for i in range(m):
            V[i] = 0.0
    elif a_s > 0 and b_s == 0:  # (b_s = 0: no shift)
        _gl_metric_out(X, V, S[_MU], _gl_metric_solve(S, a_s, nrm * zs, dmx, dmin), sv, out)
        return
    elif a_s == 0 and b_s > 0:
        _ex_metric_solve(S, K, b_s)
    elif a_s > 0 and b_s > 0:
        _gx_metric_solve(S, K, a_s, b_s, nrm * zs, dmin)
    # (a = b = 0: x = w)
    if shift > 0:
        ev = math.frexp(sv)[1]
        for i in range(m):
            V[i] = math.ldexp(V[i], ev - 1 - shift)
        sv = 1.0
    _metric_row_out(X, V, sv, out)


# the scratch rows of one row's solve (S[0..2]: X, V, Dn; S[3], S[4], S[_T3]:
# terms of sums; the others below)
_METRIC_SCRATCH = 13
_MU = 5  # group lasso: a / Dn; exclusive: the sorted metric Ds
_DS = 5
_Z, _ZLO, _Y, _YLO, _XS, _E, _T3 = 6, 7, 8, 9, 10, 11, 12


#: the root searches in a metric stop where a step is at most this many
#: units of 2^-52 of its point (see _metric_root)
_ROOT_STOP = 4 * 2.0**-52


@_jit
def _metric_root(S, a_s, b_s, lo, hi, c):
    """_metric_kernels._root for one row from the point c: steps safeguarded
    by bisection on [lo, hi], stopping where the array code stops a row (the
    point repeats, g = 0, or the step leaves the bracket) and also where a
    step is within _ROOT_STOP of its point, taking it: Newton's and
    Halley's steps leave an error of the order of the step's square (cube),
    far below a unit in the last place, so the point is the root to within
    the rounding of psi's sums (relative errors of (m - 1) eps), where the
    array code's rule spends one to three more evaluations of psi on the
    last units in the last place.  The function is the group+exclusive's
    (:func:`_gx_metric_gs`; Newton's steps, the array code's) or the group
    lasso's psi (b_s = 0, :func:`_gl_metric_gs`), whose steps are Halley's
    (Newton's step divided by 1 - L, L = g psi'' / (2 psi'^2), where
    L < 1/2; Newton's elsewhere).  On the rows of a
    300 x 784 layer after 60 steps of Adam, in its metric: 3.0 evaluations
    a row instead of 4.4 (group lasso) and 3.6 (group+exclusive), the roots
    within 3 and 1 units in the last place of the array code's rule's."""
    left, right = lo, hi
    for _ in range(_METRIC_MAX_ITER):
        if b_s == 0.0:
            g, slope, L = _gl_metric_gs(S, c)
            newton = c - (g / slope) / (1.0 - L) if L < 0.5 else c - g / slope  # (L NaN: Newton's)
        else:
            g, slope = _gx_metric_gs(S, a_s, b_s, c)
            newton = c - g / slope
        if g < 0:
            left = c
        else:
            right = c
        if left > 0:
            half = math.sqrt(left) * math.sqrt(right) if right > 4.0 * left else 0.5 * (left + right)
        else:
            half = right * _METRIC_DROP
            if half < _ROOT_FLOOR:  # (clip: a NaN stays)
                half = _ROOT_FLOOR
        nxt = newton if (newton > left) and (newton < right) else half
        done = (nxt == c) or (g == 0)
        if not done:
            if abs(nxt - c) <= _ROOT_STOP * c:
                return nxt
            c = nxt
        if done or not ((left < nxt) and (nxt < right)):
            break
    return c


# -- the group lasso: x_i = v_i s / (s + mu_i), mu = a / Dn, s the root of
# psi(s) = 1/||v / (s + mu)|| = 1 (_metric_kernels._group_lasso_s)


@_jit
def _gl_metric_gs(S, s):
    """(g, psi'(s), L) with g = psi(s) - 1: _metric_kernels._group_lasso_s's
    g_and_slope (its sums in another order), and Halley's L = g psi''(s) /
    (2 psi'(s)^2).  With A, B, C the sums of w_i^2 (s + mu_i)^-k, k = 0, 1,
    2 (_gl_metric_step), psi = A^-1/2, psi' = B A^-3/2 and psi'' =
    3 (B^2 - A C) A^-5/2 (<= 0: Cauchy-Schwarz), so
    L = 3/2 (1 - sqrt(A)) (1 - (A / B) (C / B)), formed without A's
    powers, which leave the float range first."""
    A, B, C = _gl_metric_step(S[1], S[_MU], s, S[3], S[4], S[_T3])
    nw = math.sqrt(A)
    return 1.0 / nw - 1.0, B / (nw * nw * nw), 1.5 * (1.0 - nw) * (1.0 - (A / B) * (C / B))


@_jit
def _gl_metric_solve(S, a_s, nz, dmx, dmin):
    """s = ||x|| (scaled) of the group lasso on a row with ||Dn V|| = nz >
    a_s > 0 (then |x_i| = V_i (s / (s + Mu_i)): _gl_metric_out)."""
    V, Mu = S[1], S[_MU]
    mu_max, mu_min = _gl_metric_mu(S[2], a_s, Mu)
    nv = math.sqrt(_sumsq(V))
    lo = max(nv - mu_max, (nz - a_s) / dmx)
    if lo < 0.0:
        lo = 0.0
    lo = lo * (1.0 - 8 * _METRIC_EPS)
    hi = min(nv - mu_min, (nz - a_s) / dmin) * (1.0 + 8 * _METRIC_EPS)
    hi = min(hi, nv)
    return _metric_root(S, a_s, 0.0, lo, hi, lo)


@_jit
def _gl_metric_out(X, V, Mu, s, sv, out):
    """out = sign(x) |x|, |x_i| = (V_i (s / (s + Mu_i))) sv: the group
    lasso's map and _metric_row_out in one pass (the same operations: the
    same bits as the two passes they were)."""
    for i in range(X.shape[0]):
        out[i] = _np_sign(X[i]) * ((V[i] * (s / (s + Mu[i]))) * sv)


# -- the exclusive lasso: the array code's sort (lexicographic on the exact
# products z = Z + Zlo, ties in index order: two stable sorts, as its two
# stable argsorts), its cumulative sums (sequential, as NumPy's) and its
# prefix support (the sort of a prefix of that order where the support
# ends inside it: _ex_metric_candidates)


@_rjit
def _weighted_sums_above(Z, R, t):
    """(sum Z_i R_i, sum R_i) over Z_i > t, in any order (a heuristic's sums)."""
    A = 0.0
    B = 0.0
    for i in range(Z.shape[0]):
        above = Z[i] > t
        A += Z[i] * R[i] if above else 0.0
        B += R[i] if above else 0.0
    return A, B


@_jit
def _ex_metric_candidates(Z, Dn, b_s, R, idx):
    """The entries of a row that the exclusive lasso's support in a metric
    may hold, and the entries that follow them, found without sorting:
    idx[:n] = {i: Z_i >= Z_next} in index order (n returned), Z_next the
    largest Z_i <= L, for a point L below the threshold theta, the root of
    the increasing, concave phi(t) = t - b sum_i (Z_i - t)_+ / Dn_i:
    Newton's steps from t = 0 (Michelot's, t' = b sum_{Z > t} Z_i R_i /
    (1 + b sum_{Z > t} R_i), R = 1/Dn in ``R``) stay left of it (at most
    8, until they stop rising), then L = t (1 - 2^-20) for their rounding.
    Where Z_next is 0 (every other entry is zero), the candidates are the
    Z_i > L, and ``zeros`` (returned) is True.  A heuristic: either set is
    a prefix of the pairs' total order whatever L is (an entry ranked above
    a candidate has a Z at least the candidate's), and the caller takes
    the candidates' result only where their prefix search ends inside them
    (or, ``zeros``, at their end, before the zeros), which is then the
    whole row's.  A few vectorised passes, where the sort of a whole row
    cost 4-5 ns an entry (a training step's rows: supports of a tenth of
    the row or less)."""
    m = Z.shape[0]
    for i in range(m):
        R[i] = 1.0 / Dn[i] if Dn[i] > 0.0 else 0.0
    t = 0.0
    for _ in range(8):
        A, B = _weighted_sums_above(Z, R, t)
        tn = (b_s * A) / (1.0 + b_s * B)
        if not tn > t:  # (a NaN from an overflowing sum stops the steps too)
            break
        t = tn
    low = t * (1.0 - 2.0**-20)
    top = np.int64(0)
    for i in range(m):
        top = max(top, np.int64(0) if Z[i] > low else _magnitude_bits(Z[i]))
    nxt = _magnitude_of_bits(top)  # (Z_next; a negative Z, an unchecked metric's, counts by its magnitude)
    n = 0
    if nxt > 0.0:
        for i in range(m):
            idx[n] = i
            n += np.int64(Z[i] >= nxt)
    else:
        for i in range(m):
            idx[n] = i
            n += np.int64(Z[i] > low)
    return n, nxt == 0.0


@_jit
def _sorted_candidates(S, K, n):
    """Y, Ylo, Ds [:n]: the pairs (Z, Zlo) and Dn of the candidates
    K[2][:n] (indices, increasing) in the pairs' decreasing order
    (:func:`_pair_order` on them: ties by index, as the candidates keep
    the row's order)."""
    Z, Zlo, Dn, idx = S[_Z], S[_ZLO], S[2], K[2]
    Zc, Zlc, Dc = S[3][:n], S[4][:n], S[_XS][:n]
    for j in range(n):
        i = idx[j]
        Zc[j], Zlc[j], Dc[j] = Z[i], Zlo[i], Dn[i]
    order = _pair_order(Zc, Zlc, K[0][:n], K[1][:n])
    Y, Ylo, Ds = S[_Y], S[_YLO], S[_DS]
    for j in range(n):
        o = order[j]
        Y[j], Ylo[j], Ds[j] = Zc[o], Zlc[o], Dc[o]


@_jit
def _exact_products(S):
    """Z + Zlo = Dn V exactly (_metric_kernels._sorted_magnitudes)."""
    V, Dn, Z, Zlo = S[1], S[2], S[_Z], S[_ZLO]
    for i in range(V.shape[0]):
        Z[i], Zlo[i] = _two_product(Dn[i], V[i])


@_jit
def _sorted_pairs(S, K):
    """Y, Ylo, Ds: Z, Zlo (:func:`_exact_products`) and Dn in z's
    decreasing order (:func:`_pair_order`)."""
    V, Dn, Z, Zlo, Y, Ylo, Ds = S[1], S[2], S[_Z], S[_ZLO], S[_Y], S[_YLO], S[_DS]
    order = _pair_order(Z, Zlo, K[0], K[1])
    for i in range(V.shape[0]):
        j = order[i]
        Y[i], Ylo[i], Ds[i] = Z[j], Zlo[j], Dn[j]


@_jit
def _ex_metric_parts(Y, Ylo, Ds, t, b_s):
    """_metric_kernels._exclusive_parts on one row, R = 1/E with E = Ds + t
    the sorted weights (t = 0: E = Ds): with H = cumsum(R) and F its shifted sums
    (metric_shifted_sums: F_1 = 0, F_j+1 = F_j + (z_j - z_j+1) H_j), the
    support is k = #{Y_j > b F_j} (_xp_kernels.exclusive_support; entry 1
    where Y_1 > 0), a prefix (Y falls and b F rises with j, both rounded
    monotonely), so the sums stop at its end, with the array code's bits
    at k.  R_i is formed as the loop reads it (_reciprocal_weight, the same
    bits as a pass forming all of them): over the support and the entry
    that ends it, where a vectorised pass over the whole row, once per
    point of group+exclusive's search, cost as much as the rest of the
    step on the sparse rows of a training step.  Returns (Y_k, Ylo_k, e,
    H_k, k), e = ((Y_k - b F_k) + Ylo_k) / (1 + b H_k)."""
    m = Y.shape[0]
    h = _reciprocal_weight(Ds[0], t)
    f = 0.0
    k = 1 if Y[0] > 0 else 0
    if k == 1:
        for i in range(m - 1):
            diff = (Y[i] - Y[i + 1]) + (Ylo[i] - Ylo[i + 1])
            fn = f + (diff * h if diff > 0 else 0.0)
            if not Y[i + 1] > b_s * fn:
                break
            f = fn
            h += _reciprocal_weight(Ds[i + 1], t)
            k += 1
    kk = max(k, 1) - 1
    Yk, Ylok = Y[kk], Ylo[kk]
    return Yk, Ylok, ((Yk - b_s * f) + Ylok) / (1.0 + b_s * h), h, k


@_inline
def _reciprocal_weight(d, t):
    """1/(d + t), and 1/d for t = 0 (a d of -0 keeps its sign)."""
    return 1.0 / d if t == 0.0 else 1.0 / (d + t)


@_inline
def _above(z, zlo, Yk, Ylok, e):
    """_metric_kernels._above_threshold on one entry: (z - theta)_+ from the
    pairs on the support (z >= z_k), 0 off it (clip: a -0 stays)."""
    if z < Yk or (z == Yk and zlo < Ylok):
        return 0.0
    r = ((z - Yk) + (zlo - Ylok)) + e
    return 0.0 if r < 0.0 else r


@_jit
def _ex_metric_solve(S, K, b_s):
    """V <- |x| (scaled) of the exclusive lasso on a row (0 < b_s < inf):
    |x_i| = (z_i - theta)_+ / Dn_i, no iteration."""
    V, Dn, Z, Zlo = S[1], S[2], S[_Z], S[_ZLO]
    m = V.shape[0]
    _exact_products(S)
    n, zeros = _ex_metric_candidates(Z, Dn, b_s, S[_E], K[2])
    k = n + 1
    if 0 < n < m:
        _sorted_candidates(S, K, n)
        Yk, Ylok, e, _, k = _ex_metric_parts(S[_Y][:n], S[_YLO][:n], S[_DS][:n], 0.0, b_s)
    if not (k < n or (k == n and zeros)):  # (the support may reach past the candidates: the whole row)
        _sorted_pairs(S, K)
        Yk, Ylok, e, _, _ = _ex_metric_parts(S[_Y], S[_YLO], S[_DS], 0.0, b_s)
    for i in range(V.shape[0]):
        r = _above(Z[i], Zlo[i], Yk, Ylok, e)
        V[i] = r / Dn[i] if Dn[i] > 0 else 0.0  # (Dn underflowed to 0: the limit x = 0)


# -- the group lasso and the exclusive lasso together: the exclusive
# equation with weights Dn + t inside the search over s = ||x||_2, t = a/s
# (_metric_kernels._group_exclusive_rows)


@_jit
def _gx_metric_gs(S, a_s, b_s, s):
    """(psi(s) - 1, psi'(s)) of _metric_kernels._group_exclusive_rows's
    g_and_slope: x(a/s) by the exclusive equation on the sorted row, its
    sums formed of x / r (r the power of two of max x: x may lie far below
    the row's scale) in another order than the array code's."""
    Y, Ylo, Ds, Xs, E = S[_Y], S[_YLO], S[_DS], S[_XS], S[_E]
    t = a_s / s
    Yk, Ylok, e, Hk, k = _ex_metric_parts(Y, Ylo, Ds, t, b_s)
    # (the entries past the support are x = 0: they add nothing)
    Xs, E, Ds = Xs[:k], E[:k], Ds[:k]
    T1, T2, T3 = S[3][:k], S[4][:k], S[_T3][:k]
    for i in range(k):
        E[i] = Ds[i] + t
        Xs[i] = _above(Y[i], Ylo[i], Yk, Ylok, e) / E[i]
    r = _pow2_scale(_absmax(Xs))
    f = _pow2_inverse(r)
    for i in range(k):
        xr = _over_pow2_by(Xs[i], r, f)
        x2 = xr * xr
        T1[i] = x2
        T2[i] = xr / E[i]
        T3[i] = (x2 * Ds[i]) / E[i]
    nr = math.sqrt(_pure_sum(T1))
    P = _pure_sum(T2)
    num = _pure_sum(T3) + (t * P) * (b_s * P) / (1.0 + b_s * Hk)
    return s / (nr * r) - 1.0, num / (r * (nr * nr * nr))


@_jit
def _gx_metric_solve(S, K, a_s, b_s, nz, dmin):
    """V <- |x| (scaled) of the group+exclusive lasso on a row with
    ||Dn V|| = nz > a_s > 0 and 0 < b_s < inf: the search from the upper
    end of [0, min(||v||, (nz - a)/d_min)], then
    |x_i| = (z_i - theta)_+ / (Dn_i + t) at t = a/s."""
    V, Dn, Z, Zlo = S[1], S[2], S[_Z], S[_ZLO]
    m = V.shape[0]
    _exact_products(S)
    _sorted_pairs(S, K)
    nv = math.sqrt(_sumsq(V))
    hi = min(nv, (nz - a_s) / dmin * (1.0 + 8 * _METRIC_EPS))
    s = _metric_root(S, a_s, b_s, 0.0, hi, hi)
    t = a_s / s
    Yk, Ylok, e, _, _ = _ex_metric_parts(S[_Y], S[_YLO], S[_DS], t, b_s)
    for i in range(m):
        V[i] = _above(Z[i], Zlo[i], Yk, Ylok, e) / (Dn[i] + t)


@_jit
def _metric_rows(W, D, a, b, out):
    G, m = W.shape
    S = np.empty((_METRIC_SCRATCH, m))
    K = np.empty((3, m), dtype=np.int64)
    for r in range(G):
        _metric_row(W[r], D[r], _at(a, r), _at(b, r), out[r], S, K)


@_inline
def _at(t, r):
    """Row r's threshold: t holds one per row, or one for all."""
    return np.float64(t[r if t.shape[0] > 1 else 0])


@_pjit
def _metric_rows_par(W, D, a, b, out, nch):
    G, m = W.shape
    for c in prange(nch):
        S = np.empty((_METRIC_SCRATCH, m))
        K = np.empty((3, m), dtype=np.int64)
        for r in range(c * G // nch, (c + 1) * G // nch):
            _metric_row(W[r], D[r], _at(a, r), _at(b, r), out[r], S, K)


_COLUMN_TILE = 16  # rows that are columns, moved through scratch this many at a time (a cache line of float32)


def _blocks_apply(src, dst) -> bool:
    """Whether _transpose8 takes src and dst (numba types): 2-D C-contiguous,
    aligned arrays of one float dtype (float32 or float64)."""
    return all(isinstance(a, types.Array) and a.ndim == 2 and a.layout == "C" and a.aligned for a in (src, dst)) and (
        src.dtype == dst.dtype and src.dtype in (types.float32, types.float64))


# the shuffles of an 8 x 8 transpose, in three stages of two-source shuffles
# (each stage interleaves pairs of vectors at twice the width of the last)
_TRANSPOSE_STAGES = (
    ([0, 8, 2, 10, 4, 12, 6, 14], [1, 9, 3, 11, 5, 13, 7, 15]),
    ([0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]),
    ([0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]),
)


@intrinsic
def _transpose8_vec(typingctx, src, si, sj, dst, di, dj):
    """dst[di + c, dj + r] = src[si + r, sj + c] for r, c < 8 (see
    _transpose8), in LLVM vector code: eight 8-entry loads, three stages of
    shuffles, eight 8-entry stores.  The indices are not checked."""
    if not _blocks_apply(src, dst):
        return None
    sig = types.void(src, types.intp, types.intp, dst, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        i64, i32 = llvm_ir.IntType(64), llvm_ir.IntType(32)
        size = signature.args[0].dtype.bitwidth // 8
        vty = llvm_ir.VectorType(context.get_data_type(signature.args[0].dtype), 8)
        src_ary = context.make_array(signature.args[0])(context, builder, args[0])
        dst_ary = context.make_array(signature.args[3])(context, builder, args[3])

        def at(ary, row, offset, col):  # &ary[row + offset, col] as an 8-vector pointer
            r = builder.add(row, llvm_ir.Constant(i64, offset))
            byte = builder.add(builder.mul(r, builder.extract_value(ary.strides, 0)), builder.mul(col, llvm_ir.Constant(i64, size)))
            return builder.inttoptr(builder.add(builder.ptrtoint(ary.data, i64), byte), vty.as_pointer())

        def shuffle(a, b, mask):
            return builder.shuffle_vector(a, b, llvm_ir.Constant(llvm_ir.VectorType(i32, 8), mask))

        v = [builder.load(at(src_ary, args[1], r, args[2]), align=size) for r in range(8)]
        for k, (even, odd) in enumerate(_TRANSPOSE_STAGES):
            step = 1 << k  # (the pairs step apart, in groups of 2 step vectors)
            w = [None] * 8
            for g in range(0, 8, 2 * step):
                for q in range(step):
                    a, b = v[g + q], v[g + q + step]
                    w[g + q], w[g + q + step] = shuffle(a, b, even), shuffle(a, b, odd)
            v = w
        for c in range(8):
            builder.store(v[c], at(dst_ary, args[4], c, args[5]), align=size)
        return context.get_dummy_value()

    return sig, codegen


def _transpose8(src, si, sj, dst, di, dj):  # pragma: no cover - replaced by the overload below in compiled code
    """dst[di + c, dj + r] = src[si + r, sj + c] for r, c < 8: an 8 x 8 block
    copied transposed (the values, bit for bit)."""
    raise NotImplementedError


@overload(_transpose8)
def _transpose8_overload(src, si, sj, dst, di, dj):
    """_transpose8 in vector code where _blocks_apply (the column tiles of
    _metric_cols: 0.3-0.4x the time of the scalar copy on 300 x 784 float32
    and float64), else the scalar loops."""
    if _blocks_apply(src, dst):
        return lambda src, si, sj, dst, di, dj: _transpose8_vec(src, si, sj, dst, di, dj)

    def scalar(src, si, sj, dst, di, dj):
        for r in range(8):
            for c in range(8):
                dst[di + c, dj + r] = src[si + r, sj + c]

    return scalar


@_jit
def _metric_cols(A, DA, a, b, outA):
    """_metric_rows on the columns of A (rows that are the columns of a
    C-contiguous matrix: a Linear weight's "channel" rows), moved through
    scratch rows a tile of columns at a time, so that memory is read and
    written along its lines (reading each column where it lies takes a line
    per entry: 1.6x the time at 300 x 784 float32).  A whole tile moves in
    8 x 8 blocks (_transpose8: vector shuffles), its rows past the last
    multiple of 8 and a last, partial tile entry by entry: the same bits
    as copying every entry, which took 0.26-0.39 ms of a 1.3-1.6 ms group
    lasso on 300 x 784 float32 in an Adam metric (a probe of the copies
    alone); with the blocks, benchmarks/ab_metric.py (784 x 300 and
    300 x 784, float32 and float64, F layout, serial): group lasso
    0.86-0.93x the time, exclusive 0.88-0.95x, group+exclusive 0.92-0.96x
    (their solves cost more)."""
    m, G = A.shape
    T = _COLUMN_TILE
    S = np.empty((_METRIC_SCRATCH, m))
    K = np.empty((3, m), dtype=np.int64)
    Xs = np.empty((T, m), dtype=A.dtype)
    Ds = np.empty((T, m), dtype=DA.dtype)
    Os = np.empty((T, m), dtype=outA.dtype)
    for g0 in range(0, G, T):
        n = min(T, G - g0)
        i8 = m - m % 8 if n == T else 0  # (a whole tile's rows below i8 move in 8 x 8 blocks, the rest entry by entry)
        for i0 in range(0, i8, 8):
            for j0 in range(0, T, 8):
                _transpose8(A, i0, g0 + j0, Xs, j0, i0)
                _transpose8(DA, i0, g0 + j0, Ds, j0, i0)
        for i in range(i8, m):
            for j in range(n):
                Xs[j, i] = A[i, g0 + j]
                Ds[j, i] = DA[i, g0 + j]
        for j in range(n):
            r = g0 + j
            _metric_row(Xs[j], Ds[j], _at(a, r), _at(b, r), Os[j], S, K)
        for i0 in range(0, i8, 8):
            for j0 in range(0, T, 8):
                _transpose8(Os, j0, i0, outA, i0, g0 + j0)
        for i in range(i8, m):
            for j in range(n):
                outA[i, g0 + j] = Os[j, i]


_NO_THRESHOLD = np.zeros(1)


def _thresholds(t, G, name, what):
    t = np.ascontiguousarray(t, dtype=np.float64).reshape(-1)
    if t.shape[0] not in (1, G):
        raise ValueError(f"{name}: {t.shape[0]} values of {what} for {G} rows")
    return t


def _metric_row_kernel(name, W, D, a, b, parallel, out):
    """The compiled row kernel (:func:`_metric_row`) on W in the metric D at
    the per-row thresholds a and b (each one per row, or one for all) into
    ``out`` or a new array.  D is read where it lies when it has W's
    dtype, float32 or float64 (float32 entries widened to float64 exactly
    as their row is read: a float64 copy of a float32 metric, the torch
    step's usual one for float32 weights, cost 34 us of a 300 x 784
    layer's step on a cold cache), else through a float64 copy: the
    kernels compile at most two specialisations per dtype of W, not one
    per pair of dtypes."""
    out = _result(W, out)
    G, m = W.shape
    if G == 0 or m == 0:
        return out
    D = np.asarray(D)
    if D.dtype != W.dtype or D.dtype not in (np.float32, np.float64):
        D = D.astype(np.float64)
    a, b = _thresholds(a, G, name, "a"), _thresholds(b, G, name, "b")
    if _as_columns(W, out) and D.flags.f_contiguous:
        _metric_cols(W.T, D.T, a, b, out.T)
    elif parallel and _parallel(W):
        _metric_rows_par(W, D, a, b, out, _chunks(G))
    else:
        _metric_rows(W, D, a, b, out)
    return out


def group_lasso_metric(W, D, a, *, parallel=True, out=None):
    r"""Exact prox of a_r ||x_r||_2 per row in the metric D,

    .. math:: x_r = \arg\min_x \tfrac12 \sum_i D_{ri} (x_i - w_{ri})^2 + a_r \|x\|_2 ,

    :func:`._metric_kernels.group_lasso_metric` row by row, compiled (see
    above): x_r = 0 iff ||D_r w_r|| <= a_r, else x_i = D_i w_i / (D_i + a/s)
    with s = ||x_r|| the root of a monotone equation, by safeguarded
    Halley steps (the array code's are Newton's) until a step stays within
    4 units of 2^-52 of its point (:func:`_metric_root`): the root to the
    rounding of its sums, as the array code's (whose rule spends one to
    three more steps on the last units in the last place), the two within
    a few units in the last place of each other.  ``W``, ``D`` (G, m), any
    strides (each row is copied into float64 scratch rows first; rows that
    are the columns of C-contiguous matrices, serially, a tile of them at a
    time); ``a`` one threshold per row or one for all; ``out`` (W's shape
    and dtype; may be W) receives the result.  O(G m (5 + steps)) in cache,
    O(m) scratch per thread; rows in parallel (chunks of rows) from 2^15
    entries."""
    return _metric_row_kernel("group_lasso_metric", W, D, a, _NO_THRESHOLD, parallel, out)


def exclusive_lasso_metric(W, D, b, *, parallel=True, out=None):
    r"""Exact prox of b_r/2 ||x_r||_1^2 per row in the metric D,

    .. math:: x_r = \arg\min_x \tfrac12 \sum_i D_{ri} (x_i - w_{ri})^2 + \tfrac{b_r}{2} \|x\|_1^2 ,

    :func:`._metric_kernels.exclusive_lasso_metric` row by row, compiled:
    |x_i| = (z_i - b L)_+ / D_i with z = D |w| as exact pairs, sorted
    (:func:`_pair_order`: the array code's order), the support a prefix and b L = b S_k / (1 + b H_k)
    from the cumulative sums, no iteration.  Only the pairs down to the
    first below a point under the threshold are sorted where their prefix
    search ends inside them (:func:`_ex_metric_candidates`: a few Newton
    passes find the point), else the whole row: the same prefix, the same
    bits.  The same arguments as
    :func:`group_lasso_metric`; O(G m) but for tied products (an insertion pass), O(m) scratch per thread.  Its
    norm of D w adds in another order than the array code's (only its
    zero test reads it); the rest are the array code's operations in its
    order."""
    return _metric_row_kernel("exclusive_lasso_metric", W, D, _NO_THRESHOLD, b, parallel, out)


def group_exclusive_metric(W, D, a, b, *, parallel=True, out=None):
    r"""Exact prox of a_r ||x_r||_2 + b_r/2 ||x_r||_1^2 per row in the metric D,

    .. math::

        x_r = \arg\min_x \tfrac12 \sum_i D_{ri} (x_i - w_{ri})^2
            + a_r \|x\|_2 + \tfrac{b_r}{2} \|x\|_1^2 ,

    :func:`._metric_kernels.group_exclusive_metric` row by row, compiled:
    x_r = 0 iff ||D_r w_r|| <= a_r; otherwise, with t = a/||x_r||,
    |x_i| = (D_i |w_i| - b ||x||_1)_+ / (D_i + t), the inner (exclusive)
    equation solved exactly on the row sorted once (:func:`_pair_order`)
    at each step of the array code's safeguarded Newton search over
    s = ||x_r|| (:func:`_metric_root`), until a step stays within 4 units
    of 2^-52 of its point: the root to the rounding of its sums.  b = 0 is
    :func:`group_lasso_metric`, a = 0 :func:`exclusive_lasso_metric`
    (the same code).  Its sums over a row add in another order than the
    array code's, so the result agrees with the array code's to the
    accuracy of those sums.  The same arguments as
    :func:`group_lasso_metric`, with ``b`` per row or one for all;
    O(G m (log m + steps)), O(m) scratch per thread."""
    return _metric_row_kernel("group_exclusive_metric", W, D, a, b, parallel, out)


# the array code of the kernels in a diagonal metric: the separable ones'
# route for strided data
from . import _metric_kernels as _mk  # noqa: E402
