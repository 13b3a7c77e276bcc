"""The tiny ChatML tokenizer the text-layout tests use (it lives in thinklens.testing)."""

from thinklens.testing import CHATML_TEMPLATE, MARKERS, R1_TEMPLATE, SPECIAL, tiny_chat_tokenizer

__all__ = ["CHATML_TEMPLATE", "MARKERS", "R1_TEMPLATE", "SPECIAL", "tiny_chat_tokenizer"]
