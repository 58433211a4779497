"""Folio's own CPU kernels, built at first use with the machine's C compiler and loaded through ctypes:
`quant_gemm.c` (block-quantized weights times float32 activations) and `decode_step.c` (a decoding step's small
operations: RMSNorm, rotary positions, attention with one query per head over a key/value cache (and the
three together, with the cache's write, after a fused projection), the gated feed-forward's silu(gate)·up,
greedy choices, and a step through a model's Llama blocks with quantized layers in one call).

The C files are compiled once per machine and source (`-O3 -march=native -fopenmp`, about a second) into Folio's
cache (`$FOLIO_CACHE`, else `$XDG_CACHE_HOME/folio`, else `~/.cache/folio`) as `kernels-<hash>.so`, written
atomically so that parallel first uses never read a half-written library. Where there is no compiler, the CPU
lacks AVX2/FMA/F16C or the cache cannot be written, `available()` says why and the quantized layers compute
the same products from dequantized chunks of their weights instead (`folio.nn.quant`).

    >>> lib = load()              # doctest: +SKIP
    >>> lib.folio_q4_matmul       # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from functools import cache
from pathlib import Path

import torch

from folio.data.download import cache_dir

SOURCES = [Path(__file__).with_name(name) for name in ("quant_gemm.c", "decode_step.c")]
HEADER = Path(__file__).with_name("kernels.h")  # what the sources share


def cpu_supported() -> bool:
    """Whether this CPU runs the kernels: where PyTorch runs its own AVX2 (or AVX-512) kernels. Its AVX2 level
    means AVX2 and FMA; every CPU that has them has F16C too. (`ATEN_CPU_CAPABILITY=default` turns both off.)"""
    return torch.backends.cpu.get_cpu_capability().startswith("AVX")


def _torch_gomp() -> Path | None:
    """torch's own OpenMP runtime: the kernels link to it, so one thread pool serves both."""
    found = sorted((Path(torch.__file__).parent / "lib").glob("libgomp*.so*"))
    return found[0] if found else None


@cache
def _build() -> tuple[ctypes.CDLL | None, str]:
    if not cpu_supported():
        return None, f"this CPU lacks AVX2 (PyTorch's CPU capability: {torch.backends.cpu.get_cpu_capability()})"
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None, "no C compiler (cc or gcc) on PATH"
    source = b"".join(path.read_bytes() for path in [HEADER, *SOURCES])
    gomp = _torch_gomp()
    key = hashlib.sha256(source + str(gomp).encode() + compiler.encode()).hexdigest()[:16]
    target = cache_dir() / f"kernels-{key}.so"
    try:
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as work:
                built = Path(work) / target.name
                link = [str(gomp), f"-Wl,-rpath,{gomp.parent}"] if gomp else ["-lgomp"]
                command = [compiler, "-O3", "-march=native", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-shared",
                           "-fPIC", "-o", str(built), *map(str, SOURCES), *link]
                result = subprocess.run(command, capture_output=True, text=True)
                if result.returncode != 0:
                    lines = (result.stderr or result.stdout).strip().splitlines()
                    return None, f"{compiler} could not build Folio's kernels: {lines[0] if lines else result.returncode}"
                os.replace(built, target)  # atomic: a parallel build writes the same bytes
        library = ctypes.CDLL(str(target))
    except OSError as err:
        return None, f"the kernels could not be built or loaded in {target.parent} ({err.strerror or err})"
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    for function in (library.folio_q4_matmul, library.folio_q8_matmul):  # (x, M, K, codes, d, m, N, y, threads)
        function.argtypes = [pointer, size, size, pointer, pointer, pointer, size, pointer, ctypes.c_int]
        function.restype = None
    for function in (library.folio_q4_dequantize, library.folio_q8_dequantize):  # (codes, d, m, n0, n1, K, out, threads)
        function.argtypes = [pointer, pointer, pointer, size, size, size, pointer, ctypes.c_int]
        function.restype = None
    # (q, k, v, mask, B, H, KVH, S, D, q strides ×2, k strides ×3, v strides ×3, scale, out, threads) → 0, or -1
    library.folio_attend_one.argtypes = [pointer] * 4 + [size] * 13 + [ctypes.c_float, pointer, ctypes.c_int]
    library.folio_attend_one.restype = ctypes.c_int
    library.folio_rms_norm.argtypes = [pointer, size, size, pointer, ctypes.c_float, pointer, ctypes.c_int]  # x M N w eps y
    library.folio_rms_norm.restype = None
    library.folio_argmax_rows.argtypes = [pointer, size, size, size, pointer]  # x M N row-stride out → 0, or -1
    library.folio_argmax_rows.restype = ctypes.c_int
    library.folio_swiglu.argtypes = [pointer, size, size, pointer]  # gate|up (M, 2F), M, F, out (M, F)
    library.folio_swiglu.restype = None
    # (x, B, H, T, D, x strides ×3, cos, sin, cos/sin strides over B and T, out)
    library.folio_rope.argtypes = [pointer] + [size] * 7 + [pointer, pointer, size, size, pointer]
    library.folio_rope.restype = None
    # (qkv, B, H, KVH, D, qkv row stride, cos, sin, cos/sin stride over B, k, v, k strides ×3, v strides ×3,
    # position, mask, scale, q scratch, out, threads) → 0, or -1
    library.folio_decode_attend.argtypes = [pointer] + [size] * 5 + [pointer, pointer, size, pointer, pointer] + \
        [size] * 7 + [pointer, ctypes.c_float, pointer, pointer, ctypes.c_int]
    library.folio_decode_attend.restype = ctypes.c_int
    # (blocks, n, x, B, cos, sin, cos/sin stride over B, k and v buffers (n each), k strides ×3, v strides ×3,
    # position, mask, scratch, y, threads) → 0, or -1
    library.folio_decode_blocks.argtypes = [pointer, size, pointer, size, pointer, pointer, size, pointer, pointer] + \
        [size] * 7 + [pointer] * 3 + [ctypes.c_int]
    library.folio_decode_blocks.restype = ctypes.c_int
    return library, ""


class Linear(ctypes.Structure):
    """A quantized linear layer as the kernels read it (kernels.h's `folio_linear`): kind 4 or 8, W (N, K)."""

    _fields_ = [("kind", ctypes.c_int64), ("N", ctypes.c_int64), ("K", ctypes.c_int64), ("codes", ctypes.c_void_p),
                ("d", ctypes.c_void_p), ("mins", ctypes.c_void_p)]


class Block(ctypes.Structure):
    """A Llama block's weights as `folio_decode_blocks` reads them (decode_step.c's `folio_block`)."""

    _fields_ = [("qkv", Linear), ("o", Linear), ("gate_up", Linear), ("down", Linear), ("norm1", ctypes.c_void_p),
                ("norm2", ctypes.c_void_p), ("eps1", ctypes.c_double), ("eps2", ctypes.c_double),
                ("scale", ctypes.c_double), ("C", ctypes.c_int64), ("H", ctypes.c_int64), ("KVH", ctypes.c_int64),
                ("D", ctypes.c_int64), ("F", ctypes.c_int64)]


_compiling = getattr(torch.compiler, "is_compiling", lambda: False)  # (PyTorch 2.3 and later)
_forked = False


def _after_fork_in_child() -> None:
    global _forked
    _forked = True


os.register_at_fork(after_in_child=_after_fork_in_child)


def threads() -> int:
    """The threads a kernel call may use: torch's intra-op setting, but one in a process forked from another (its
    OpenMP workers were not copied by the fork, and a parallel region there waits for them forever)."""
    return 1 if _forked else torch.get_num_threads()


@cache
def _pause_openmp():
    """libgomp's `omp_pause_resource_all`, where torch runs on a libgomp of its own that has it (OpenMP 5.0, GCC
    9 and later); None elsewhere."""
    gomp = _torch_gomp()
    try:
        return ctypes.CDLL(str(gomp)).omp_pause_resource_all if gomp else None
    except (OSError, AttributeError):
        return None


def release_workers() -> None:
    """Let the calling thread's OpenMP workers go (torch's libgomp; nothing elsewhere, or in a forked process).

    libgomp keeps a pool of workers for every thread that has run a parallel region, counts them all, and once
    they outnumber the CPUs its workers stop spin-waiting between regions: every region then waits for sleeping
    workers to be woken. SmolLM2's 8-row decoding step on 2 CPUs took 42 ms instead of 28 while another, idle
    thread kept its pool. So a long-lived thread that is done with parallel work for a while (a batcher with
    nothing to do, the loader, a server's worker thread after a request) calls this; its next parallel region
    starts a pool anew (a fraction of a millisecond). Only the calling thread's pool goes: libgomp's
    `omp_pause_resource_all(omp_pause_soft)` on the host (a no-op inside a parallel region)."""
    pause = _pause_openmp()
    if pause is not None and not _forked:  # (a forked child's pool refers to workers the fork did not copy)
        pause(1)  # omp_pause_soft


def load() -> ctypes.CDLL | None:
    """The kernels' library, or None where it cannot be built here (`available()` says why), and while a graph is
    being traced, exported or compiled: a ctypes call is invisible there (the graph would keep an unwritten
    output), so the callers take their PyTorch path."""
    if torch.jit.is_tracing() or _compiling():  # (the ONNX exporter traces, or runs torch.export)
        return None
    return _build()[0]


def for_inputs(*tensors: torch.Tensor) -> ctypes.CDLL | None:
    """The library for a kernel that reads these tensors: float32, on the CPU, none of them wanting a gradient
    (a ctypes call has no backward). None otherwise, or where `load()` gives none: the caller takes its PyTorch
    path."""
    grad = torch.is_grad_enabled()
    for t in tensors:
        if t.dtype != torch.float32 or t.device.type != "cpu" or (grad and t.requires_grad):
            return None
    return load()


_SCRATCH = threading.local()


def scratch(size: int) -> torch.Tensor:
    """This thread's float32 buffer of at least `size` numbers, kept between calls, for work that is done with it
    when the call returns (dequantized weights, a decoding step's activations): a fresh 7 MB buffer a product is
    fresh pages from the kernel, and a prompt's products then took 1.7x longer than their kernels' (SmolLM2, 31
    tokens: 280 ms against 166)."""
    buffer = getattr(_SCRATCH, "buffer", None)
    if buffer is None or buffer.numel() < size:
        buffer = _SCRATCH.buffer = torch.empty(size)
    return buffer


def available() -> tuple[bool, str]:
    """(whether Folio's kernels run on this machine, why not)."""
    library, reason = _build()
    return library is not None, reason


__all__ = ["Block", "Linear", "available", "cpu_supported", "load", "release_workers", "scratch", "threads"]
