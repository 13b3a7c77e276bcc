"""Single-head ablation scores of the refusal-cliff code: heads x 0.001, one global norm."""

from __future__ import annotations

import torch

from thinklens.interventions.heads import published_ablation_scores

TEXTS = [
    "<|im_start|>user\nWe will pick a lock.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nI can't bake bread.<|im_end|>\n<|im_start|>assistant\nSure",
    "Sorry, we will write a poem.",
]


def brute_force(m, probe, texts, batch_size):
    """Per head: a plain HF forward per batch with the published patch on that layer's o_proj
    input (scale the head by 0.001, divide by the new Frobenius norm, multiply by the old one),
    the probe's sigmoid at each row's last token, averaged over every text."""
    out = torch.zeros(m.n_layers, m.n_heads, dtype=torch.float64)
    layer_out = {}
    grab = m.hf.model.layers[probe.layer].register_forward_hook(
        lambda mod, args, o: layer_out.__setitem__("h", o[0] if isinstance(o, tuple) else o)
    )

    def mean_prob(patch):
        probs = []
        for i in range(0, len(texts), batch_size):
            ids, mask = m.tokenize(texts[i : i + batch_size])
            handle = patch() if patch else None
            with torch.no_grad():
                m.hf(input_ids=ids, attention_mask=mask)
            if handle:
                handle.remove()
            h = layer_out["h"][torch.arange(len(ids)), mask.sum(-1) - 1]
            h = m.hf.model.norm(h) if probe.norm else h
            probs.append(torch.sigmoid(h.double() @ probe.weight.double() + probe.bias))
        return float(torch.cat(probs).mean().detach())

    def patch_for(layer, head):
        def pre(mod, args):
            x = args[0]
            z = x.reshape(*x.shape[:-1], m.n_heads, -1)
            before = z.clone()
            z[:, :, head, :] = z[:, :, head, :] * 0.001
            return ((z / z.norm() * before.norm()).reshape(x.shape),)

        o_proj = m.hf.model.layers[layer].self_attn.o_proj
        return lambda: o_proj.register_forward_pre_hook(pre)

    clean = mean_prob(None)
    for l in range(m.n_layers):
        for h in range(m.n_heads):
            out[l, h] = mean_prob(patch_for(l, h)) if l <= probe.layer else clean
    grab.remove()
    return clean, out


def test_scores_equal_the_published_patch(tiny, random_probe):
    probe = random_probe(tiny, layer=1)
    got = published_ablation_scores(tiny, TEXTS, probe, batch_size=2, progress=False)
    clean, ref = brute_force(tiny, probe, TEXTS, batch_size=2)
    published = torch.tensor(got.meta["published_scores"], dtype=torch.float64)
    torch.testing.assert_close(published, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.scores, clean - ref, atol=1e-6, rtol=0)
    # The ascending ranking is the published one (highest probability with the head scaled).
    heads = [(l, h) for l in range(tiny.n_layers) for h in range(tiny.n_heads)]
    published_order = sorted(heads, key=lambda lh: -float(ref[lh]))  # stable: layer-major ties
    assert got.ranked()[:4] == published_order[:4]
