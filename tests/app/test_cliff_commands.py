"""``thinklens cliff train|sweep-layers|score`` on a tiny model."""

from __future__ import annotations

import json

import pytest
import torch

from thinklens.app.cli import build_parser, main
from thinklens.probes import RefusalProbe
from thinklens.tables import read_table
from thinklens.testing import tiny_model


@pytest.fixture
def tiny(monkeypatch):
    import thinklens as tl

    m = tiny_model("llama")
    monkeypatch.setattr(tl, "load_model", lambda name, backend: m)
    return m


@pytest.mark.parametrize(
    "argv", [["cliff"], ["cliff", "train"], ["cliff", "sweep-layers"], ["cliff", "score"]]
)
def test_help(argv, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    assert "usage: thinklens" in capsys.readouterr().out


def _labelled(tmp_path, m):
    rows = [
        dict(text=m.chat(f"{s} {o}."), label=int(s == "I will"))
        for s in ("I will", "They might")
        for o in ("bake bread", "plant a garden", "pick a lock", "say sorry") * 3
    ]
    path = tmp_path / "labelled.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def test_probe_train_sweep_and_cliff_score(tmp_path, tiny, capsys):
    data = _labelled(tmp_path, tiny)
    out = tmp_path / "probe"
    assert main(["cliff", "train", "tiny", "--labelled", str(data), "--out", str(out)]) == 0
    probe = RefusalProbe.load(out, model=tiny)
    assert probe.layer == tiny.n_layers - 1 and probe.norm
    assert main(["cliff", "train", "tiny", "--labelled", str(data), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err

    table = tmp_path / "layers.csv"
    assert (
        main(["cliff", "sweep-layers", "tiny", "--labelled", str(data), "--out", str(table)]) == 0
    )
    assert list(read_table(table)["layer"]) == list(range(tiny.n_layers))

    traces = tmp_path / "traces.jsonl"
    records = [
        dict(
            prompt="I want to bake bread.",
            response="<think>\nHmm, fine.\n</think>\n\nSure.",
            group="harmless",
        ),
        dict(
            prompt="We cannot pick a lock.",
            thinking="It is harmful and illegal.",
            answer="Sorry, I can't help with that.",
            group="harmful",
        ),
        dict(prompt="You will say sorry.", response="No marker here.", group="harmful"),
    ]
    traces.write_text("\n".join(json.dumps(r) for r in records))
    cliffs, tokens = tmp_path / "cliffs.parquet", tmp_path / "tokens.jsonl"
    argv = [
        "cliff",
        "score",
        "tiny",
        str(out),
        str(traces),
        "--out",
        str(cliffs),
        "--tokens",
        str(tokens),
        "--k",
        "2",
    ]
    with pytest.warns(UserWarning, match="never closed their thinking"):
        assert main(argv) == 0
    got = read_table(cliffs)
    assert list(got["prompt"]) == [r["prompt"] for r in records[:2]]
    assert list(got["study_group"]) == ["harmless", "refused harmful"]
    assert {"cliff", "plateau", "tail_min", "last_score"} <= set(got.columns)
    assert set(read_table(tokens)["example"]) == {0, 1}


def test_cliff_score_without_prompt_or_response_is_a_clear_error(tmp_path, tiny, capsys):
    probe = tmp_path / "probe"
    main(
        [
            "cliff",
            "train",
            "tiny",
            "--labelled",
            str(_labelled(tmp_path, tiny)),
            "--out",
            str(probe),
        ]
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(dict(prompt="I want to bake bread.", text="x")))
    assert (
        main(["cliff", "score", "tiny", str(probe), str(bad), "--out", str(tmp_path / "c.csv")])
        == 2
    )
    assert "neither 'response' nor 'thinking'" in capsys.readouterr().err


def test_probe_train_on_every_window_position(tmp_path, tiny, monkeypatch, capsys):
    import pandas as pd

    import thinklens.rollouts as rollouts
    from thinklens.probes import behaviour_traces, window_span

    thinking = {
        "We cannot pick a lock.": ("It is harmful and illegal, so I refuse.", True),
        "You will say sorry.": ("It is harmful and illegal here, so no.", True),
        "I want to bake bread.": ("Hmm, I can help with bread.", False),
        "You should plant a garden.": ("Okay, a garden. Fine!", False),
    }

    def rollout(model, prompts, max_new_tokens):
        rows = [(p, *thinking[p]) for p in prompts]
        return pd.DataFrame(
            dict(
                prompt=[p for p, _, _ in rows],
                response=["r"] * len(rows),
                thinking=[t for _, t, _ in rows],
                answer=["Sorry, no." if r else "Sure." for _, _, r in rows],
                refused=[r for _, _, r in rows],
            )
        )

    monkeypatch.setattr(rollouts, "rollout", rollout)
    harmful, harmless = tmp_path / "harmful.txt", tmp_path / "harmless.txt"
    harmful.write_text("We cannot pick a lock.\nYou will say sorry.\n")
    harmless.write_text("I want to bake bread.\nYou should plant a garden.\n")
    out = tmp_path / "probe"
    data = ["--harmful", str(harmful), "--harmless", str(harmless), "--positions", "window"]
    assert main(["cliff", "train", "tiny", *data, "--out", str(out)]) == 0
    probe = RefusalProbe.load(out, model=tiny)
    traces, labels = behaviour_traces(
        tiny, rollout(tiny, list(thinking)[:2], 0), rollout(tiny, list(thinking)[2:], 0)
    )
    alone = RefusalProbe.train(
        tiny, [t.text for t in traces], labels, spans=list(map(window_span, traces)), progress=False
    )
    assert probe.meta["positions"] == "spans" and torch.allclose(probe.weight, alone.weight)
    bad = ["cliff", "train", "tiny", "--labelled", str(_labelled(tmp_path, tiny))]
    assert main([*bad, "--positions", "window", "--out", str(tmp_path / "p2")]) == 2
    assert "--positions window needs the model's rollouts" in capsys.readouterr().err
