"""generate(engine="vllm") against a stand-in ``vllm`` module shaped like vLLM's API:
``LLM(model=, dtype=, seed=, ...)``, ``SamplingParams(...)`` and ``llm.generate`` returning
RequestOutput-like objects (``.outputs[0].text``, ``.outputs[0].token_ids``)."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field

import pytest
import torch

import thinklens as tl
from thinklens.evaluation import is_refusal
from thinklens.model import Model
from thinklens.testing import tiny_model


@dataclass
class CompletionOutput:
    text: str
    token_ids: list[int]


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: list[int] = field(default_factory=list)
    skip_special_tokens: bool = True


def fake_vllm(respond) -> types.ModuleType:
    """A ``vllm`` module whose LLM answers each prompt's token ids with ``respond(ids, params)``."""
    module = types.ModuleType("vllm")
    module.calls = []

    class LLM:
        def __init__(self, **kwargs):
            module.calls.append(("LLM", kwargs))

        def generate(self, prompts, sampling_params, use_tqdm=True):
            module.calls.append(("generate", prompts, sampling_params))
            return [
                RequestOutput(
                    p["prompt_token_ids"],
                    [CompletionOutput("(vLLM's own detokenisation)", respond(p, sampling_params))],
                )
                for p in prompts
            ]

    module.LLM, module.SamplingParams = LLM, SamplingParams
    return module


@pytest.fixture(scope="module")
def model() -> Model:
    """A tiny model under a hub-style name (what vLLM loads by)."""
    m = tiny_model("llama", "nnsight")
    m.name = "org/tiny-llama"
    return m


@pytest.fixture(autouse=True)
def _no_engine(model):
    model.engines.clear()  # each test brings its own stand-in vllm


@pytest.fixture
def hf_greedy(model, monkeypatch):
    """vLLM stood in for by the tiny model's own greedy decoding of each prompt's token ids."""

    def respond(prompt, params):
        ids = torch.tensor([prompt["prompt_token_ids"]])
        out = model.hf.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=params.max_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            eos_token_id=params.stop_token_ids,
            pad_token_id=model.tokenizer.pad_token_id,
        )
        return out[0, ids.shape[1] :].tolist()

    vllm = fake_vllm(respond)
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    return model, vllm


PROMPTS = ["I can't bake bread.", "We will write a poem about a garden today."]


def test_vllm_gives_what_the_hf_engine_gives(hf_greedy):
    model, vllm = hf_greedy
    out = tl.generate(model, PROMPTS, max_new_tokens=6, engine="vllm")
    assert out == tl.generate(model, PROMPTS, max_new_tokens=6)
    (_, llm_kwargs), (_, prompts, params) = vllm.calls
    assert llm_kwargs == {"model": "org/tiny-llama", "dtype": "float32", "seed": 0}
    # The chat template applied as the HF engine does, tokenized without added specials.
    expected = model.tokenizer([model.chat(p) for p in PROMPTS], add_special_tokens=False)
    assert [p["prompt_token_ids"] for p in prompts] == expected["input_ids"]
    eos = model.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert (params.temperature, params.top_p, params.max_tokens) == (0.0, 1.0, 6)
    assert (params.seed, params.stop_token_ids) == (None, [eos])


def test_sampling_arguments_and_engine_reuse(hf_greedy):
    model, vllm = hf_greedy
    kw = dict(max_new_tokens=3, temperature=0.7, top_p=0.9, seed=3, engine="vllm")
    tl.generate(model, PROMPTS, **kw)
    tl.generate(model, PROMPTS[:1], system="Be brief.", **kw)
    assert [c[0] for c in vllm.calls] == ["LLM", "generate", "generate"]  # loaded once
    params = vllm.calls[1][2]
    assert (params.temperature, params.top_p, params.seed, params.max_tokens) == (0.7, 0.9, 3, 3)
    chat = model.tokenizer(model.chat(PROMPTS[0], "Be brief."), add_special_tokens=False)
    assert vllm.calls[2][1][0]["prompt_token_ids"] == chat["input_ids"]
    tl.generate(model, PROMPTS, engine_kwargs={"tensor_parallel_size": 2}, **kw)
    assert vllm.calls[3] == (
        "LLM",
        {"model": "org/tiny-llama", "dtype": "float32", "seed": 0, "tensor_parallel_size": 2},
    )


def test_vllm_answers_feed_traces_and_refusal_judging(model, monkeypatch):
    tok = model.tokenizer
    reply = "<think>\nHmm, the user asks how to pick a lock.\n</think>\n\nSorry, I can't help."
    ids = tok(reply, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    monkeypatch.setitem(sys.modules, "vllm", fake_vllm(lambda p, params: ids))
    (answer,) = tl.generate(model, ["Pick a lock."], engine="vllm")
    assert isinstance(answer, str) and answer == reply
    assert is_refusal(answer)
    thinking, final = answer.removeprefix("<think>\n").split("\n</think>\n\n")
    trace = model.trace("Pick a lock.", thinking, final)
    assert tok.decode(trace.part_ids("answer")).strip() == final


def test_vllm_missing_is_a_clear_error(model, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    with pytest.raises(ImportError, match="pip install vllm"):
        tl.generate(model, PROMPTS, engine="vllm")


def test_interventions_are_refused_under_vllm(model, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", fake_vllm(lambda p, params: []))
    with tl.intervene(model, tl.HeadAblation({1: [0]})):
        with pytest.raises(NotImplementedError, match="do not act under vLLM"):
            tl.generate(model, PROMPTS, engine="vllm")
    assert tl.generate(model, PROMPTS, engine="vllm") == ["", ""]  # fine once removed


def test_engine_name_and_source_errors(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", fake_vllm(lambda p, params: []))
    with pytest.raises(ValueError, match="choose 'hf' or 'vllm'"):
        tl.generate(tiny, PROMPTS, engine="sglang")
    with pytest.raises(ValueError, match="unknown model 'tiny-llama'"):
        tl.generate(tiny, PROMPTS, engine="vllm")
    assert tl.generate(tiny, PROMPTS, engine="vllm", engine_kwargs={"model": "org/x"}) == ["", ""]
