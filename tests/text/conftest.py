"""The tokenizer directories the text library is tested against: the fixture, and models/tiny-mimo when trained."""

from tests.support.tokenizer_dirs import fixture_dir, loaded, model_dir

__all__ = ["fixture_dir", "loaded", "model_dir"]
