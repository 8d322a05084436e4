"""MiMo's configuration for HF transformers (`trust_remote_code`): Qwen2's, plus the number of MTP layers.

Written here from MiMo's published architecture; `auto_map` in config.json points `AutoConfig` at `MiMoConfig`.
"""

from transformers.models.qwen2.configuration_qwen2 import Qwen2Config


class MiMoConfig(Qwen2Config):
    """A Qwen2 decoder configuration with `num_nextn_predict_layers` multi-token-prediction layers."""

    model_type = "mimo"

    def __init__(self, *args, num_nextn_predict_layers: int = 1, **kwargs):
        self.num_nextn_predict_layers = num_nextn_predict_layers
        super().__init__(*args, **kwargs)


__all__ = ["MiMoConfig"]
