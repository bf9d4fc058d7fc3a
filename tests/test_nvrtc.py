"""Every CUDA kernel source of the CuPy path compiles, without a GPU.

CuPy compiles ``ElementwiseKernel`` / ``ReductionKernel`` bodies with NVRTC at
their first call, so a typo in one would only show on a GPU.  This test reads
every such kernel (and any ``RawKernel`` / ``RawModule`` source) from the
backend modules' source with ``ast``, expands it the way CuPy does -- one
``typedef`` per type placeholder (float32 and float64 for ``T``), inputs as
``const`` values read at the element's index, outputs as references, the map
and reduce expressions as CuPy's ``REDUCE``/``POST_MAP`` macros inside a
block reduction -- into standalone CUDA C++, and compiles it with NVRTC for
sm_90 (Hopper).  The indexing is plain pointers instead of CuPy's
``CArray``/``CIndexer`` (headers that ship with CuPy); the kernel bodies, the
names and the types they see are CuPy's.

NVRTC is loaded from the ``nvidia-cuda-nvrtc-cu12`` wheel (``pip install
nvidia-cuda-nvrtc-cu12``: Linux x86_64, a 90 MB download, 217 MB installed,
so it is not in the ``test`` extra) or a system CUDA; the test skips only
where neither is there.
"""

from __future__ import annotations

import ast
import ctypes
import ctypes.util
import glob
import os
import pathlib
import re
import sys

import pytest

import proxlib

BACKENDS = pathlib.Path(proxlib.__file__).parent / "backends"
ARCH = "sm_90"
_TYPES = {"float64": "double", "float32": "float", "int64": "long long", "int32": "int", "bool": "bool", "uint8": "unsigned char"}


# ------------------------------------------------------------------ NVRTC


def _nvrtc_candidates():
    for entry in sys.path:
        for pattern in ("nvidia/cuda_nvrtc/lib/libnvrtc.so*", "nvidia/cu*/lib/libnvrtc.so*"):
            yield from sorted(glob.glob(os.path.join(entry, pattern)))
    found = ctypes.util.find_library("nvrtc")
    if found:
        yield found
    for cuda in (os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"):
        if cuda:
            yield from sorted(glob.glob(os.path.join(cuda, "lib64", "libnvrtc.so*")))


def _load_nvrtc():
    for path in _nvrtc_candidates():
        if ".alt." in path:
            continue
        try:
            lib = ctypes.CDLL(path)
            lib.nvrtcVersion  # noqa: B018 - the symbol must be there
        except (OSError, AttributeError):
            continue
        return lib
    return None


NVRTC = _load_nvrtc()
pytestmark = pytest.mark.skipif(
    NVRTC is None, reason="NVRTC is not installed (pip install nvidia-cuda-nvrtc-cu12)"
)


def nvrtc_compile(source: str, name: str) -> tuple[bool, str, int]:
    """(ok, log, cubin size) of compiling ``source`` for ARCH."""
    prog = ctypes.c_void_p()
    rc = NVRTC.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), f"{name}.cu".encode(), 0, None, None)
    assert rc == 0, f"nvrtcCreateProgram failed ({rc})"
    try:
        opts = [f"--gpu-architecture={ARCH}".encode(), b"--std=c++17"]
        arr = (ctypes.c_char_p * len(opts))(*opts)
        rc = NVRTC.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        NVRTC.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        NVRTC.nvrtcGetProgramLog(prog, log)
        cubin = ctypes.c_size_t(0)
        if rc == 0:
            NVRTC.nvrtcGetCUBINSize(prog, ctypes.byref(cubin))
        return rc == 0, log.value.decode(errors="replace"), cubin.value
    finally:
        NVRTC.nvrtcDestroyProgram(ctypes.byref(prog))


# ---------------------------------------------------- kernels from the source


def _literal(node):
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def cupy_kernels():
    """(module, kind, arguments) of every cupy.ElementwiseKernel /
    ReductionKernel / RawKernel / RawModule call with literal sources."""
    found = []
    for path in sorted(BACKENDS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            kind = node.func.attr
            if kind not in ("ElementwiseKernel", "ReductionKernel", "RawKernel", "RawModule"):
                continue
            args = [_literal(a) for a in node.args]
            kwargs = {k.arg: _literal(k.value) for k in node.keywords}
            assert all(a is not None for a in args), f"{path.name}:{node.lineno}: non-literal kernel source"
            found.append((path.name, kind, args, kwargs))
    return found


def _params(spec: str):
    """CuPy's parameter list 'T x, raw float64 y' -> [(raw, type, name)]."""
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        words = item.split()
        raw = words[0] == "raw"
        typ, name = words[-2], words[-1]
        out.append((raw, typ, name))
    return out


def _ctype(typ: str, placeholders: dict) -> str:
    return placeholders.get(typ) or _TYPES[typ]


def _decl(typ: str, placeholders: dict) -> str:
    """A variable's declared type: the placeholder's name (typedef'd) or the C type."""
    return typ if typ in placeholders else _TYPES[typ]


def _typedefs(placeholders: dict) -> str:
    return "".join(f"typedef {c} {t};\n" for t, c in placeholders.items())


def expand_elementwise(in_params, out_params, operation, name, T):
    ins, outs = _params(in_params), _params(out_params)
    ph = {t: T for _, t, _ in ins + outs if t not in _TYPES}
    sig, body = [], []
    for raw, typ, var in ins:
        sig.append(f"const {_ctype(typ, ph)}* _raw_{var}")
        body.append(f"const {_ctype(typ, ph)}* {var} = _raw_{var};" if raw else f"const {_decl(typ, ph)} {var} = _raw_{var}[i];")
    for raw, typ, var in outs:
        sig.append(f"{_ctype(typ, ph)}* _raw_{var}")
        body.append(f"{_ctype(typ, ph)}* {var} = _raw_{var};" if raw else f"{_decl(typ, ph)} &{var} = _raw_{var}[i];")
    sig.append("long long _n")
    return (
        _typedefs(ph)
        + f'extern "C" __global__ void {name}({", ".join(sig)}) {{\n'
        + "  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < _n;"
        + " i += (long long)blockDim.x * gridDim.x) {\n    "
        + "\n    ".join(body)
        + f"\n    {operation};\n  }}\n}}\n"
    )


def expand_reduction(in_params, out_params, map_expr, reduce_expr, post_map_expr, identity, name, T, reduce_type=None):
    ins, outs = _params(in_params), _params(out_params)
    ph = {t: T for _, t, _ in ins + outs if t not in _TYPES}
    rtype = _ctype(reduce_type, ph) if reduce_type else _ctype(outs[0][1], ph)
    sig = [f"const {_ctype(t, ph)}* _raw_{v}" for _, t, v in ins]
    sig += [f"{_ctype(t, ph)}* _raw_{v}" for _, t, v in outs]
    reads = "\n      ".join(f"const {_decl(t, ph)} {v} = _raw_{v}[_o * _m + _j];" for _, t, v in ins)
    refs = "\n      ".join(f"{_decl(t, ph)} &{v} = _raw_{v}[_o];" for _, t, v in outs)
    return (
        _typedefs(ph)
        + f"typedef {rtype} _type_reduce;\n"
        + f"#define REDUCE(a, b) ({reduce_expr})\n"
        + f"#define POST_MAP(a) ({post_map_expr})\n"
        + f'extern "C" __global__ void {name}({", ".join(sig)}, long long _m, long long _n_out) {{\n'
        + "  __shared__ _type_reduce _sdata[512];\n"
        + "  for (long long _o = blockIdx.x; _o < _n_out; _o += gridDim.x) {\n"
        + f"    _type_reduce _s = _type_reduce({identity});\n"
        + "    for (long long _j = threadIdx.x; _j < _m; _j += blockDim.x) {\n"
        + f"      {reads}\n"
        + f"      _type_reduce _a = static_cast<_type_reduce>({map_expr});\n"
        + "      _s = REDUCE(_s, _a);\n"
        + "    }\n"
        + "    _sdata[threadIdx.x] = _s;\n"
        + "    __syncthreads();\n"
        + "    for (int _k = blockDim.x / 2; _k > 0; _k >>= 1) {\n"
        + "      if (threadIdx.x < _k) { _type_reduce a = _sdata[threadIdx.x], b = _sdata[threadIdx.x + _k];"
        + " _sdata[threadIdx.x] = REDUCE(a, b); }\n"
        + "      __syncthreads();\n"
        + "    }\n"
        + "    if (threadIdx.x == 0) {\n"
        + f"      {refs}\n"
        + "      _type_reduce a = _sdata[0];\n"
        + "      POST_MAP(a);\n"
        + "    }\n"
        + "    __syncthreads();\n"
        + "  }\n}\n"
    )


def sources():
    """(test id, CUDA source, kernel name) for every kernel and dtype."""
    out = []
    for module, kind, args, kwargs in cupy_kernels():
        if kind == "ElementwiseKernel":
            in_p, out_p, op, name = args[:4]
            for T in ("float", "double"):
                out.append((f"{module}:{name}:{T}", expand_elementwise(in_p, out_p, op, name, T), name))
        elif kind == "ReductionKernel":
            in_p, out_p, map_e, red_e, post_e, ident, name = args[:7]
            for T in ("float", "double"):
                src = expand_reduction(in_p, out_p, map_e, red_e, post_e, ident, name, T, kwargs.get("reduce_type"))
                out.append((f"{module}:{name}:{T}", src, name))
        else:  # RawKernel(code, name) / RawModule(code=...)
            code = args[0] if args else kwargs.get("code")
            out.append((f"{module}:{kind}", code, kind))
    return out


_SOURCES = sources()


def test_the_cupy_path_has_kernels_to_compile():
    names = {name for _, _, name in _SOURCES}
    assert {"proxlib_row_sumsq", "proxlib_scale_rows", "proxlib_soft_threshold", "proxlib_l2sq_shrink"} <= names


@pytest.mark.parametrize("source,name", [(s, n) for _, s, n in _SOURCES], ids=[i for i, _, _ in _SOURCES])
def test_cuda_kernel_compiles_with_nvrtc(source, name):
    ok, log, cubin = nvrtc_compile(source, name)
    assert ok, f"{name} does not compile for {ARCH}:\n{log}\n--- source ---\n{source}"
    assert cubin > 0
    assert re.search(r"\bwarning\b", log) is None, log


def test_a_broken_kernel_body_is_caught():
    # the check can fail: an undeclared name in an otherwise valid body
    src = expand_elementwise("T v, T w", "T x", "x = v / ((T)1 + (T)2 * undeclared)", "broken", "float")
    ok, log, _ = nvrtc_compile(src, "broken")
    assert not ok and "undeclared" in log
