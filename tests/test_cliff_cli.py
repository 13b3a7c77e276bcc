"""``thinklens probe train|sweep-layers`` and ``thinklens cliff score`` on a tiny model."""

from __future__ import annotations

import json

import pytest

from thinklens.cli import build_parser, main
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
    "argv", [["probe"], ["probe", "train"], ["probe", "sweep-layers"], ["cliff", "score"]]
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
    assert main(["probe", "train", "tiny", "--labelled", str(data), "--out", str(out)]) == 0
    probe = RefusalProbe.load(out, model=tiny)
    assert probe.layer == tiny.n_layers - 1 and probe.norm
    assert main(["probe", "train", "tiny", "--labelled", str(data), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err

    table = tmp_path / "layers.csv"
    assert (
        main(["probe", "sweep-layers", "tiny", "--labelled", str(data), "--out", str(table)]) == 0
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
            "probe",
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
