"""The test tokenizers: a Qwen2-style fixture tokenizer directory builder, a corpus that stresses it, and fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from services.text.artifacts import LoadedTokenizer, load_tokenizer_dir
from services.tokenizer.limits import Limits

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_MIMO = REPO_ROOT / "models" / "tiny-mimo"
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen2.5-Instruct's ChatML template without tools (MiMo ships the same), default system prompt included.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "{%- else %}\n"
    "    {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    '    {%- if (message.role == "user") or (message.role == "system" and not loop.first)'
    ' or (message.role == "assistant") %}\n'
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)
TRAINING_TEXTS = [
    "The quick brown fox jumps over the lazy dog. Numbers like 1234 and 3.14159 appear too.",
    "def add(a, b):\n    return a + b\n\nclass Point:\n    x: int = 0\n",
    "你好，世界！今天我们学习数学和编程。这是一个测试。",
    "Emoji time 😀🎉 and more text, with punctuation; quotes \"like this\" and 'that'.",
    "Let x be a positive integer. Then x^2 + 2x + 1 = (x + 1)^2.",
]
# English, Chinese, emoji (incl. ZWJ sequences and flags), code, whitespace runs, special tokens, edge cases.
CORPUS = [
    "Hello, world! The answer is 42.",
    "你好，世界！我们今天学习数学。",
    "Emoji: 😀🎉👩‍👩‍👧‍👦 🇨🇳🇺🇸 and a thumbs up 👍🏽.",
    'def f(x):\n\tif x > 0:\n\t\treturn x ** 2  # square\n    return -x\n\nprint(f(3), "done")\n',
    "spaces    and\ttabs\t\t and\n\n\n\nnewlines   \r\n trailing   ",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n2+2=4\n</think>\n4<|im_end|>",
    "Mixed 中文 and English; 数学 x² + y² = z² ≤ ∞ — done…",
    "<|endoftext|>",
    "",
    "   ",
    "Ünïcödé café naïve résumé 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
]


def build_fixture_dir(directory: Path) -> Path:
    """A byte-level BPE with Qwen2's pre-tokenizer; special tokens added after training (high ids, like Qwen2)."""
    tokenizer = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=700, min_frequency=2, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(TRAINING_TEXTS * 20, trainer)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    ids = {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}
    added = {
        str(i): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t, i in ids.items()
    }
    config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    generation = {"bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"]}
    (directory / "generation_config.json").write_text(json.dumps(generation))
    return directory


TEST_LIMITS = Limits(max_batch_size=64, max_text_bytes=4096, max_messages=16, max_sequence_tokens=4096)


# Fixtures: a conftest that wants them imports them by name (`from tests.support.tokenizer_dirs import ...`).
@pytest.fixture(scope="session")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixture_dir(tmp_path_factory.mktemp("tokenizer") / "fixture-qwen2")


@pytest.fixture(scope="session", params=["fixture", "tiny-mimo"])
def model_dir(request: pytest.FixtureRequest, fixture_dir: Path) -> Path:
    """Each tokenizer directory the code must handle: the fixture, and the trained tiny MiMo when present."""
    if request.param == "fixture":
        return fixture_dir
    if not (TINY_MIMO / "tokenizer.json").is_file():
        pytest.skip("models/tiny-mimo has no tokenizer.json yet")
    return TINY_MIMO


@pytest.fixture(scope="session")
def loaded(model_dir: Path) -> LoadedTokenizer:
    return load_tokenizer_dir(model_dir)
