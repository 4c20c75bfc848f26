"""Device and precision choice shared by generation, training and evaluation."""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from dataclasses import dataclass

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
DTYPE_ENV = "PREFSCALE_DTYPE"  # auto | float32 | bfloat16: overrides the automatic choice


def cpu_bf16_support() -> dict[str, bool]:
    """The CPU features that make bf16 matmuls fast: AMX tiles (amx_bf16) and AVX-512 BF16."""
    return {
        "amx_bf16": bool(torch.cpu._is_amx_tile_supported()),
        "avx512_bf16": bool(torch.cpu._is_avx512_bf16_supported()),
    }


def fast_cpu_bf16() -> bool:
    """Whether bf16 should beat fp32 on this CPU: with AMX, SmolLM2-135M trains about 2.2x and generates 1.4x
    faster in bf16 (the figures the smollm2-lumora issue reports); without AMX or AVX-512 BF16, bf16 is far slower
    (0.04x / 0.23x on the AVX2 machine in BENCHMARKS.md). `prefscale bench dtype` measures a CPU."""
    return any(cpu_bf16_support().values())


def pick_dtype(device: str, dtype: str | None = None) -> torch.dtype:
    """The torch dtype for `device`: PREFSCALE_DTYPE when set (an operator's override), else `dtype` (the
    recipe's `policy.dtype`), else `auto`: bf16 on CUDA and on CPUs with fast bf16 (AMX / AVX-512 BF16), fp32
    elsewhere."""
    env = os.environ.get(DTYPE_ENV)
    name, source = (env, DTYPE_ENV) if env else (dtype or "auto", "policy.dtype")
    if name == "auto":
        fast = device.startswith("cuda") or fast_cpu_bf16()
        return torch.bfloat16 if fast else torch.float32
    if name not in DTYPES:
        raise ValueError(f"{source} must be auto, {' or '.join(DTYPES)}; got {name!r}")
    return DTYPES[name]


@dataclass(frozen=True)
class Compute:
    """Where models run and in which dtype: `cuda` with bf16 when a GPU is present, else the CPU in bf16 where it
    is fast (AMX / AVX-512 BF16) and fp32 elsewhere (`pick_dtype`)."""

    device: str
    dtype: torch.dtype
    threads: int | None = None

    @property
    def bf16(self) -> bool:
        return self.dtype == torch.bfloat16

    def describe(self) -> str:
        name = torch.cuda.get_device_name(0) if self.device.startswith("cuda") else "cpu"
        return f"{self.device} ({name}, {str(self.dtype).removeprefix('torch.')})"


_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc mallopt parameters
ALLOCATOR_ENV = "PREFSCALE_MALLOC_TUNING"  # 0: leave glibc's allocator as it is


@functools.cache
def tune_cpu_allocator() -> bool:
    """Keep freed memory in the process (glibc `mallopt`): whether it was applied.

    By default glibc hands large freed blocks (a training step's logits and activations, hundreds of MB) back to
    the kernel and page-faults them in again on the next step; on the 2-core CPU machine that was a fifth of a
    SmolLM2 LoRA DPO step. Serving blocks up to 2 GiB from the heap and never trimming it trades a resident set
    that stays at its peak for that time. Linux with glibc only; PREFSCALE_MALLOC_TUNING=0 turns it off.
    """
    if os.environ.get(ALLOCATOR_ENV, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, ...): nothing to tune
        return False
    big = ctypes.c_int(2**31 - 1)
    return all(
        libc.mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_THRESHOLD, big),
            (_M_TRIM_THRESHOLD, big),
            (_M_TOP_PAD, ctypes.c_int(1 << 28)),
        )
    )


def resolve_compute(device: str = "auto", threads: int | None = None, dtype: str | None = None) -> Compute:
    """`auto` picks cuda when available, else cpu; `cpu` / `cuda[:i]` force one. `dtype`: `auto` (None),
    `float32` or `bfloat16`, unless PREFSCALE_DTYPE overrides it; see `pick_dtype`."""
    if device not in {"auto", "cpu"} and not device.startswith("cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:i]', got {device!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if threads is None and device == "cpu":
        threads = int(os.environ.get("PREFSCALE_TORCH_THREADS", "0")) or None
    if threads:
        torch.set_num_threads(threads)
    if device == "cpu":
        tune_cpu_allocator()
    return Compute(device=device, dtype=pick_dtype(device, dtype), threads=threads)
