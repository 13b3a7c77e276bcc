"""Edits at chosen positions: checked against edits written out by hand, on both backends, in
captures, remote traces and KV-cached generation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

import thinklens as tl
from thinklens.backends import BACKENDS
from thinklens.hooks import Edit
from thinklens.model import Model
from thinklens.positions import token_positions
from thinklens.sites import Site
from thinklens.testing import SAMPLE_TEXTS as TEXTS
from thinklens.testing import tiny_model

SPANS = [(2, 5), (0, 3), (4, 9)]  # one per text of TEXTS; the texts differ in length


@pytest.fixture(scope="module")
def models(tiny_pair) -> Callable[[str, str], Model]:
    """``models(family, backend)``: tiny models, the Llama pair shared with the session."""
    made = {("llama", b): m for b, m in tiny_pair.items()}

    def get(family: str, backend: str) -> Model:
        if (family, backend) not in made:
            made[family, backend] = tiny_model(family, backend)
        return made[family, backend]

    return get


@dataclass
class Blend(Edit):
    """Another edit's functions where ``keep`` [batch, pos] (written out in the test) is True,
    at every position as far as the engine knows: the reference for positions. A
    norm-restoring edit blended at ``z`` restores nothing where ``z`` is kept."""

    inner: Edit | None = None
    keep: Tensor | None = None

    @property
    def restores_norm(self) -> bool:  # type: ignore[override]
        return self.inner.restores_norm

    def site_fns(self, model: Model) -> list:
        def blend(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
            def out(x: Tensor) -> Tensor:
                assert self.keep.shape == x.shape[:2]
                return torch.where(self.keep.view(*self.keep.shape, *[1] * (x.dim() - 2)), fn(x), x)

            return out

        return [(s, blend(fn)) for s, fn in self.inner.resolved_fns(model)]


def _project(r: Tensor) -> Callable[[Tensor], Tensor]:
    r_hat = r / r.norm()
    return lambda x: x - (x @ r_hat.to(x))[..., None] * r_hat.to(x)


def _span_mask(mask: Tensor, spans: list[tuple[int, int]]) -> Tensor:
    """[batch, pos] of a right-padded batch: True inside each row's span."""
    j = torch.arange(mask.shape[1])[None, :]
    starts, ends = (torch.tensor(s)[:, None] for s in zip(*spans, strict=True))
    return (j >= starts) & (j < ends) & mask.bool()


def _run(m: Model, sites: list[str], edits: list[Edit]) -> dict[str, Tensor]:
    """Sites of one full forward pass over TEXTS (right-padded, in order), edits active."""
    ids, mask = m.tokenize(TEXTS)
    got: dict[str, Tensor] = {}
    with tl.intervene(m, edits), torch.no_grad():
        m.backend.run(
            ids,
            mask,
            [Site.parse(s) for s in sites],
            lambda s, x: got.update({str(s): x}),
            stop_early=False,
        )
    return got


def test_token_positions_count_real_tokens_only():
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    assert token_positions(right, 2, 4, 0).tolist() == [[0, 1, 2, -1], [0, 1, 2, 3]]
    assert token_positions(left, 2, 4, 0).tolist() == [[-1, 0, 1, 2], [0, 1, 2, 3]]
    # A cached step: the mask covers the past and the new token, which continues each row.
    step = torch.cat([left, torch.ones(2, 1, dtype=left.dtype)], 1)
    assert token_positions(step, 2, 1, 4).tolist() == [[3], [4]]
    assert token_positions(None, 2, 2, 5).tolist() == [[5, 6], [5, 6]]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2"])
def test_projection_at_spans_edits_those_positions_only(models, family, backend):
    m = models(family, backend)
    r = torch.randn(m.d_model)
    pos = tl.Positions.span(SPANS, texts=TEXTS)  # capture sorts the texts: rows go by text
    edit = tl.DirectionProjection(r, layers=[1], kinds=("resid_pre",), positions=pos)
    sites = ["resid_pre.1", "resid_post.2"]
    base = tl.capture(m, TEXTS, sites, progress=False, batch_size=2)
    with tl.intervene(m, edit):
        caps = tl.capture(m, TEXTS, sites, progress=False, batch_size=2)
    keep = base.mask.bool()
    inside = _span_mask(base.mask, SPANS)
    # The edited site itself: the projection by hand inside the spans, the same tensor outside.
    manual = torch.where(inside[..., None], _project(r)(base["resid_pre.1"]), base["resid_pre.1"])
    torch.testing.assert_close(caps["resid_pre.1"], manual, atol=1e-5, rtol=0)
    assert torch.equal(caps["resid_pre.1"][keep & ~inside], base["resid_pre.1"][keep & ~inside])
    # Downstream: tokens before a span cannot see it; the rest are moved by attention.
    before = keep & (torch.arange(keep.shape[1])[None, :] < torch.tensor(SPANS)[:, :1])
    assert torch.equal(caps["resid_post.2"][before], base["resid_post.2"][before])
    assert (caps["resid_post.2"][inside] - base["resid_post.2"][inside]).abs().max() > 1e-3
    # The whole forward pass: the same as the projection written out by hand at the spans.
    ids, mask = m.tokenize(TEXTS)
    plain = tl.DirectionProjection(r, layers=[1], kinds=("resid_pre",))
    by_hand = Blend(inner=plain, keep=_span_mask(mask, SPANS))
    ref = _run(m, ["resid_post.2"], [by_hand])["resid_post.2"]
    got = _run(m, ["resid_post.2"], [edit])["resid_post.2"]
    torch.testing.assert_close(got[keep], ref[keep], atol=1e-5, rtol=0)
    torch.testing.assert_close(caps["resid_post.2"][keep], ref[keep], atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_head_ablation_and_addition_at_positions(models, backend):
    m = models("llama", backend)
    base = tl.capture(m, TEXTS, ["z.1", "attn_out.1", "resid_pre.2"], progress=False)
    keep = base.mask.bool()
    inside = _span_mask(base.mask, SPANS)
    with tl.intervene(m, tl.HeadAblation({1: [2]}, positions=tl.Positions.span(SPANS, TEXTS))):
        abl = tl.capture(m, TEXTS, ["z.1"], progress=False)
    manual = base["z.1"].clone()
    manual[..., 2, :] = torch.where(inside[..., None], 0.0, manual[..., 2, :])
    torch.testing.assert_close(abl["z.1"], manual)
    # The norm-restoring ablation: the attention output keeps its norm inside, is untouched
    # outside.
    scale = tl.HeadAblation({1: [1, 2]}, mode="scale", positions=tl.Positions.span(SPANS, TEXTS))
    with tl.intervene(m, scale):
        out = tl.capture(m, TEXTS, ["attn_out.1"], progress=False)["attn_out.1"]
    outside = keep & ~inside
    assert torch.equal(out[outside], base["attn_out.1"][outside])
    assert (out[inside] - base["attn_out.1"][inside]).abs().max() > 1e-4
    torch.testing.assert_close(out[inside].norm(dim=-1), base["attn_out.1"][inside].norm(dim=-1))
    # Addition from position 3 on: exactly v there, nothing before.
    v = torch.randn(m.d_model)
    with tl.intervene(m, tl.ActivationAddition(v, layers=[2], positions=tl.Positions.from_(3))):
        add = tl.capture(m, TEXTS, ["resid_pre.2"], progress=False)["resid_pre.2"]
    later = keep & (torch.arange(keep.shape[1]) >= 3)
    delta = add - base["resid_pre.2"]
    torch.testing.assert_close(delta[later], v.expand(int(later.sum()), -1), atol=1e-5, rtol=0)
    assert torch.equal(delta[keep & ~later], torch.zeros_like(delta[keep & ~later]))


def test_thinking_positions_follow_each_trace(tiny):
    traces = [
        tiny.trace("I can't bake bread.", "Hmm, the user asks how to bake bread.", "Sure."),
        tiny.trace("We will write a poem.", "Hmm.", "Sorry, I cannot."),
        tiny.trace("Plant a garden.", None, "Sure, here it is."),  # no thinking: nothing edited
    ]
    texts = [t.text for t in traces]
    v = torch.randn(tiny.d_model)
    edit = tl.ActivationAddition(v, layers=[1], positions=tl.Positions.thinking(traces))
    base = tl.capture(tiny, texts, ["resid_pre.1"], progress=False)["resid_pre.1"]
    for batch_size in (1, 3):
        with tl.intervene(tiny, edit):
            got = tl.capture(tiny, texts, ["resid_pre.1"], progress=False, batch_size=batch_size)
        for i, t in enumerate(traces):
            n = len(t.input_ids)
            start, end = t.spans["thinking"]
            on = torch.zeros(n, dtype=torch.bool)
            on[start:end] = True
            expected = base[i, :n] + on[:, None] * v
            torch.testing.assert_close(got["resid_pre.1"][i, :n], expected, atol=1e-5, rtol=0)
        assert traces[0].spans["thinking"][1] > traces[0].spans["thinking"][0]


def test_remote_traces_apply_positions(tiny_pair):
    local = tiny_pair["nnsight"]
    remote = Model(
        local.hf,
        local.tokenizer,
        local.family,
        name="org/tiny",
        backend_name="nnsight",
        remote="local",
    )
    r = torch.randn(local.d_model)
    pos = tl.Positions.span(SPANS, texts=TEXTS)
    edits = [
        tl.DirectionProjection(r, layers=[1], positions=pos),
        tl.HeadAblation({1: [0, 3]}, mode="scale", positions=pos),
        tl.ActivationAddition(r, layers=[2], positions=tl.Positions.from_(4)),
    ]
    sites = ["resid_pre.1", "attn_out.1", "resid_post.2"]
    out = {}
    for name, m in [("local", local), ("remote", remote)]:
        with tl.intervene(m, edits):
            out[name] = tl.capture(m, TEXTS, sites, progress=False, batch_size=2)
    plain = tl.capture(local, TEXTS, sites, progress=False)
    keep = plain.mask.bool()
    for s in sites:
        torch.testing.assert_close(out["remote"][s], out["local"][s], atol=1e-5, rtol=0)
    assert (out["remote"]["resid_post.2"][keep] - plain["resid_post.2"][keep]).abs().max() > 1e-3
    assert remote.backend.trace_ops == []


def test_positions_count_unpadded_tokens_under_left_padding(tiny):
    """The same span edits the same tokens whether the batch is padded left or right."""
    r = torch.randn(tiny.d_model) * 10
    edit = tl.ActivationAddition(r, layers=[0, 1], positions=tl.Positions.span(SPANS, TEXTS))
    last = []
    with tl.intervene(tiny, edit), torch.no_grad():
        for side in ("right", "left"):
            ids, mask = tiny.tokenize(TEXTS, padding_side=side)
            pos_ids = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = tiny.hf(input_ids=ids, attention_mask=mask, position_ids=pos_ids).logits
            rows = torch.arange(len(ids))
            last.append(logits[rows, mask.sum(-1) - 1 if side == "right" else -1])
    plain = tiny.logits(TEXTS)
    torch.testing.assert_close(last[0], last[1], atol=1e-5, rtol=0)
    assert (last[0] - plain).abs().max() > 1e-3


# --- generation ----------------------------------------------------------------------------


def _eos(m: Model) -> set[int]:
    tok = m.tokenizer
    return {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")} - {None, tok.unk_token_id}


def _greedy_without_cache(
    m: Model, prompts: list[str], steps: int, edit_for: Callable[[Tensor, Tensor], Edit]
) -> list[str]:
    """Greedy decoding by hand: the whole left-padded sequence again at every step, no cache,
    with ``edit_for(mask, prompt_lengths)`` active; finished rows take padding, as HF does."""
    tok = m.tokenizer
    ids, mask = m.tokenize([m.chat(p) for p in prompts], padding_side="left")
    width, lengths = ids.shape[1], mask.sum(-1)
    done = torch.zeros(len(ids), dtype=torch.bool)
    eos = torch.tensor(sorted(_eos(m)))
    for _ in range(steps):
        pos_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        with tl.intervene(m, edit_for(mask, lengths)), torch.no_grad():
            logits = m.hf(input_ids=ids, attention_mask=mask, position_ids=pos_ids, use_cache=False)
        nxt = torch.where(done, tok.pad_token_id, logits.logits[:, -1].argmax(-1))
        ids = torch.cat([ids, nxt[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        done |= torch.isin(nxt, eos)
        if bool(done.all()):
            break
    return tok.batch_decode(ids[:, width:], skip_special_tokens=False)


def _generated_by_hand(mask: Tensor, lengths: Tensor) -> Tensor:
    """[batch, pos] of a left-padded sequence: True at tokens past each row's prompt."""
    pads = mask.shape[1] - mask.sum(-1, keepdim=True)
    return torch.arange(mask.shape[1])[None, :] - pads >= lengths[:, None]


EDITS = {
    "addition": lambda m, pos: tl.ActivationAddition(
        m.hf.get_submodule(m.family.embed).weight[5].detach() * 50, layers=[0, 1, 2], positions=pos
    ),
    "scaled heads": lambda m, pos: tl.HeadAblation(
        {0: [0, 1, 2], 1: [0, 1, 2, 3]}, mode="scale", positions=pos
    ),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
@pytest.mark.parametrize(
    "family, backend", [("llama", "transformer_lens"), ("llama", "nnsight"), ("gpt2", "nnsight")]
)
def test_generation_edits_generated_tokens_like_a_loop_without_cache(models, family, backend, edit):
    m = models(family, backend)
    prompts = ["I can't bake bread.", "We will write a poem about a garden today, okay?"]
    steps = 8
    make = EDITS[edit]
    plain = tl.generate(m, prompts, max_new_tokens=steps, skip_special_tokens=False)
    with tl.intervene(m, make(m, tl.Positions.generated())):
        cached = tl.generate(m, prompts, max_new_tokens=steps, skip_special_tokens=False)

    # By hand: the edit at all positions, blended with a mask of the padded layout written here.
    def by_hand(mask: Tensor, lengths: Tensor) -> Edit:
        return Blend(inner=make(m, None), keep=_generated_by_hand(mask, lengths))

    loop = _greedy_without_cache(m, prompts, steps, by_hand)
    assert cached == loop

    # The same with the positions machinery on the full sequence: positions >= prompt length.
    def spans(mask: Tensor, lengths: Tensor) -> Edit:
        return make(m, tl.Positions.span([(int(n), 10_000) for n in lengths]))

    assert _greedy_without_cache(m, prompts, steps, spans) == loop
    # And those spans by text in the cached run: each prompt row finds its own.
    lengths = m.tokenize([m.chat(p) for p in prompts])[1].sum(-1)
    by_text = tl.Positions.span([(int(n), 10_000) for n in lengths], [m.chat(p) for p in prompts])
    with tl.intervene(m, make(m, by_text)):
        assert (
            tl.generate(m, prompts[::-1], max_new_tokens=steps, skip_special_tokens=False)
            == (cached[::-1])
        )
    # The first new token comes from the prompt alone; the edit acts after it.
    first = m.tokenizer.batch_decode(m.logits([m.chat(p) for p in prompts]).argmax(-1)[:, None])
    assert all(
        c.startswith(f) and p.startswith(f) for c, p, f in zip(cached, plain, first, strict=True)
    )
    if edit == "addition":
        assert cached != plain


def test_generation_from_a_position_in_the_prompt(tiny):
    prompts = ["I can't bake bread.", "We will write a poem about a garden today, okay?"]
    t = 20  # inside both prompts: the prompt tokens from t on are edited too
    make = EDITS["addition"]
    with tl.intervene(tiny, make(tiny, tl.Positions.from_(t))):
        cached = tl.generate(tiny, prompts, max_new_tokens=8, skip_special_tokens=False)

    def by_hand(mask: Tensor, lengths: Tensor) -> Edit:
        pads = mask.shape[1] - mask.sum(-1, keepdim=True)
        return Blend(inner=make(tiny, None), keep=torch.arange(mask.shape[1]) - pads >= t)

    assert cached == _greedy_without_cache(tiny, prompts, 8, by_hand)
    assert cached != tl.generate(tiny, prompts, max_new_tokens=8, skip_special_tokens=False)


def _hooks(m: Model) -> int:
    return sum(len(x._forward_hooks) + len(x._forward_pre_hooks) for x in m.hf.modules())


def test_all_positions_is_the_edit_as_before(tiny):
    r = torch.randn(tiny.d_model)
    before = tiny.logits(TEXTS)
    out, hooks = [], []
    for pos in (None, "all", tl.Positions.all()):
        with tl.intervene(tiny, tl.DirectionProjection(r, positions=pos)):
            out.append(tiny.logits(TEXTS))
            hooks.append(_hooks(tiny))
    assert all(torch.equal(o, out[0]) for o in out) and len(set(hooks)) == 1
    # Without a cache every token is prompt: "generated tokens only" edits none of them.
    with tl.intervene(tiny, tl.DirectionProjection(r, positions="generated")):
        assert torch.equal(tiny.logits(TEXTS), before)
    with tl.intervene(tiny, tl.DirectionProjection(r, positions=tl.Positions.from_(0))):
        torch.testing.assert_close(tiny.logits(TEXTS), out[0], atol=1e-6, rtol=0)
        assert _hooks(tiny) == hooks[0] + 2  # a pre-hook and a hook on the top module


def test_shorthands_equal_the_constructors(tiny):
    v = torch.randn(tiny.d_model)
    ids, mask = tiny.tokenize(TEXTS)
    spans_mask = _span_mask(mask, SPANS)
    out = []
    for pos in (tl.Positions.span(SPANS), SPANS, spans_mask, tl.Positions.mask(spans_mask)):
        with tl.intervene(tiny, tl.ActivationAddition(v, layers=[1], positions=pos)):
            out.append(tiny.logits(TEXTS))
    assert all(torch.equal(o, out[0]) for o in out)
    assert repr(tl.Positions.span(SPANS, TEXTS)) == "Positions(rows=3 by text)"


def test_position_errors_say_what_to_do(tiny):
    v = torch.randn(tiny.d_model)

    def run(pos):
        with tl.intervene(tiny, tl.ActivationAddition(v, layers=[1], positions=pos)):
            tiny.logits(TEXTS)

    with pytest.raises(ValueError, match="give one row per text in the batch, or pass texts="):
        run(tl.Positions.span(SPANS[:2]))
    with pytest.raises(ValueError, match="none of the texts"):
        run(tl.Positions.span([(0, 1)], texts=["Hello there"]))
    with pytest.raises(ValueError, match="same text with different positions"):
        run(tl.Positions.span([(0, 1), (1, 2)], texts=[TEXTS[0], TEXTS[0]]))
    with pytest.raises(ValueError, match="restore='position'"):
        tl.HeadAblation({1: [0]}, mode="scale", restore="global", positions="generated")
    with pytest.raises(ValueError, match="unknown part"):
        tl.Positions.part([tiny.trace("Hi")], "thoughts")
    with pytest.raises(ValueError, match="t >= 0"):
        tl.Positions.from_(-1)
    with pytest.raises(ValueError, match="unknown positions"):
        run("last")
    with pytest.raises(ValueError, match=r"\[start, end\)"):
        tl.Positions.span([(3, 1)])
    # A cached step whose first pass the edit never saw.
    ids, mask = tiny.tokenize(TEXTS[:1])
    longer = torch.cat([mask, mask], 1)
    with tl.intervene(tiny, tl.ActivationAddition(v, positions="generated")):
        with pytest.raises(RuntimeError, match="enter the intervention before"):
            tiny.hf(input_ids=ids, attention_mask=longer)


def test_edits_with_their_own_hooks_refuse_positions(tiny):
    class OwnHooks(Edit):
        def install(self, model, tree):
            return []

    with pytest.raises(ValueError, match="do not read positions"):
        tl.intervene(tiny, OwnHooks(positions="generated"))
    tl.intervene(tiny, OwnHooks()).remove()
