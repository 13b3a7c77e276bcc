"""``thinklens echo spans|gap|attention|prompting`` on small JSONL files with a tiny model."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from thinklens.app.cli import build_parser, main

Q = "The user asks how to plant a garden."
TRACES = [
    dict(
        question=Q, thinking="The user asks how to plant a garden. We will write a poem.", correct=1
    ),
    dict(
        question=Q, thinking="We will write a poem. I can't bake bread.", answer="Sure.", correct=0
    ),
    dict(
        question=Q, response="Hmm, the user asks how to plant a garden. Okay!</think>Yes", correct=1
    ),
    dict(question=Q, thinking="I can't bake bread. Sorry, we will write a poem.", correct=0),
]


@pytest.fixture
def traces(tmp_path):
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in TRACES))
    return path


@pytest.fixture
def tiny_loaded(monkeypatch, tiny):
    import thinklens as tl

    monkeypatch.setattr(tl, "load_model", lambda name, backend="transformer_lens": tiny)
    return tiny


@pytest.mark.parametrize("action", ["spans", "gap", "attention", "prompting"])
def test_help(action, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["echo", action, "--help"])
    assert exit_.value.code == 0
    assert "usage: thinklens echo" in capsys.readouterr().out


def test_spans_command(traces, tmp_path, tiny_loaded, capsys):
    out = tmp_path / "spans.jsonl"
    assert main(["echo", "spans", str(traces), "--out", str(out), "--model", "tiny"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["has_echo"] for r in rows] == [True, False, True, False]
    assert rows[0]["echo_text"] == [Q] and rows[0]["token_spans"]
    assert "2 of 4 traces echo the question" in capsys.readouterr().out


def test_gap_command_writes_parquet(traces, tmp_path, tiny_loaded, capsys):
    out = tmp_path / "gap.parquet"
    assert main(["echo", "gap", "tiny", str(traces), "--out", str(out)]) == 0
    df = pd.read_parquet(out)
    assert len(df) == 4 and (df.loc[[1, 3], "gap"] == 0).all()
    assert "length_bin" in capsys.readouterr().out


def test_attention_command_with_groups(traces, tmp_path, tiny_loaded, capsys):
    out, stats = tmp_path / "att.jsonl", tmp_path / "stats.csv"
    argv = ["echo", "attention", "tiny", str(traces), "--out", str(out), "--ks", "4",
            "--group-by", "correct", "--stats", str(stats)]  # fmt: skip
    assert main(argv) == 0
    df = pd.read_json(out, lines=True)
    assert len(df) == 4 * tiny_loaded.n_layers * 4
    table = pd.read_csv(stats)
    assert {"auc", "cohens_d", "layer", "channel"} <= set(table.columns)
    assert "middle" in capsys.readouterr().out
    argv[-4:-2] = ["--group-by", "echo"]
    assert main(argv) == 0


def test_prompting_command(tmp_path, tiny_loaded, capsys):
    data = tmp_path / "gsm.jsonl"
    rows = [dict(question="I can't bake 3 breads. How many?", answer="... #### 3"),
            dict(question=Q, answer="#### 4")]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "prompting.jsonl"
    argv = ["echo", "prompting", "tiny", str(data), "--out", str(out), "--budget", "6"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.split("\nwrote")[0])
    assert {"accuracy", "accuracy_echo_free", "acceptance_rate", "echoic_accuracy"} <= set(summary)
    assert len(out.read_text().splitlines()) == 2


def test_errors_are_one_line(traces, tmp_path, tiny_loaded, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(dict(thinking="x")) + "\n")
    assert main(["echo", "spans", str(bad), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "record 1: a trace record has no question" in capsys.readouterr().err
    assert main(["echo", "spans", str(traces), "--out", str(tmp_path / "o.txt")]) == 2
    assert "cannot write o.txt" in capsys.readouterr().err
    gsm = tmp_path / "q.jsonl"
    gsm.write_text(json.dumps(dict(question=Q)) + "\n")
    assert main(["echo", "prompting", "tiny", str(gsm), "--out", str(tmp_path / "p.jsonl")]) == 2
    assert "gold" in capsys.readouterr().err
