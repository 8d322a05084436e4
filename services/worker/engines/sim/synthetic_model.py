"""A tokenizer-only model directory for running the simulator without a real checkpoint (tests, bench)."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_CORPUS = (
    "The quick brown fox jumps over the lazy dog. Solve for x: 2x + 3 = 11, so x = 4. "
    "def add(a, b):\n    return a + b\n"
    "Let me think step by step about the problem before writing the final answer. "
    "Prime numbers below twenty are 2, 3, 5, 7, 11, 13, 17 and 19. "
)


def write_synthetic_model(path: str | Path, vocab_size: int = 1024, max_context_length: int = 4096) -> Path:
    """Write tokenizer.json, tokenizer_config.json (ChatML), config.json and generation_config.json."""
    root = Path(path).resolve()
    root.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 50, trainer=trainer)
    tok.save(str(root / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    eos = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    (root / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "bos_token": None,
                "model_max_length": max_context_length,
                "chat_template": CHATML_TEMPLATE,
            },
            indent=1,
        )
    )
    config = {
        "architectures": ["MiMoForCausalLM"],
        "model_type": "mimo",
        "vocab_size": tok.get_vocab_size(),
        "max_position_embeddings": max_context_length,
        "eos_token_id": eos[0],
        "_comment": "tokenizer-only directory written by mimo-serve for the sim engine; there are no weights",
    }
    (root / "config.json").write_text(json.dumps(config, indent=1))
    (root / "generation_config.json").write_text(json.dumps({"eos_token_id": eos}, indent=1))
    return root
