"""Small models and offline data for the demo, notebooks and benchmarks (need the ``flax`` extra)."""

from gradtx.models.char_lm import CharLM as CharLM
from gradtx.models.char_lm import CharLMConfig as CharLMConfig
from gradtx.models.char_lm import cross_entropy_loss as cross_entropy_loss
from gradtx.models.stdlib_text import TextCorpus as TextCorpus
from gradtx.models.stdlib_text import load_stdlib_corpus as load_stdlib_corpus

__all__ = ["CharLM", "CharLMConfig", "TextCorpus", "cross_entropy_loss", "load_stdlib_corpus"]
