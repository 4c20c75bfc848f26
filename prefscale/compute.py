"""Device and precision choice shared by generation, training and evaluation."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Compute:
    """Where models run: `cuda` with bf16 when a GPU is present, else CPU with fp32."""

    device: str
    dtype: torch.dtype
    threads: int | None = None

    @property
    def bf16(self) -> bool:
        return self.dtype == torch.bfloat16

    def describe(self) -> str:
        name = torch.cuda.get_device_name(0) if self.device.startswith("cuda") else "cpu"
        return f"{self.device} ({name}, {str(self.dtype).removeprefix('torch.')})"


def resolve_compute(device: str = "auto", threads: int | None = None) -> Compute:
    """`auto` picks cuda (bf16) when available, else cpu (fp32); `cpu` / `cuda[:i]` force one."""
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
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    return Compute(device=device, dtype=dtype, threads=threads)
