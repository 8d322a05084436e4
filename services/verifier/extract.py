"""Reading a model's response: the answer after </think>, and its last fenced code block."""

from __future__ import annotations

import re

MAX_REGION_CHARS = 16_000  # math answers: only the last 16k characters are searched

_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)\n?[ \t]*```", re.DOTALL)
LANGUAGE_TAGS = {
    "python": {"python", "py", "python3"},
    "cpp": {"cpp", "c++", "cc", "cxx"},
}


def after_think(response: str) -> str | None:
    """The text after the last </think>; the whole text without a think block; None if thinking never ended."""
    if "</think>" in response:
        return response.rsplit("</think>", 1)[1]
    if "<think>" in response:
        return None
    return response


def answer_region(response: str) -> str:
    """Where a math answer is looked for: the last 16k characters after </think> ("" if none)."""
    region = after_think(response)
    return "" if region is None else region[-MAX_REGION_CHARS:]


def last_code_block(response: str, language: str) -> str | None:
    """The last fenced block tagged with `language` after </think>, else the last fenced block; None if none."""
    region = after_think(response)
    if region is None:
        return None
    blocks = _FENCE.findall(region)
    if not blocks:
        return None
    tags = LANGUAGE_TAGS.get(language, {language})
    tagged = [code for tag, code in blocks if tag.lower() in tags]
    code = tagged[-1] if tagged else blocks[-1][1]
    return code if code.strip() else None
