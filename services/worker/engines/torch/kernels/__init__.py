"""GPU kernels of the reference engine (Triton). Imported only where Triton is installed; the CPU path is exact torch."""

from __future__ import annotations

import importlib.util
import os


def triton_available(device_type: str) -> bool:
    """Triton kernels run on CUDA, or on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1, tests)."""
    if importlib.util.find_spec("triton") is None:
        return False
    return device_type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"
