"""The MiMo model (Qwen2 backbone + MTP layer) and its HF-format loader."""

from services.worker.model.loader import load_mimo
from services.worker.model.mimo import KVCache, MiMoConfig, MiMoForCausalLM

__all__ = ["KVCache", "MiMoConfig", "MiMoForCausalLM", "load_mimo"]
