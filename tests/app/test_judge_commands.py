"""``thinklens judge select`` and ``thinklens judge repair`` on a tiny model."""

from __future__ import annotations

import json

import pytest

from thinklens.analyses.judge.export import FORMATS, load_manifest, load_messages
from thinklens.analyses.judge.select import METHODS
from thinklens.app.cli import build_parser, main
from thinklens.tables import read_table
from thinklens.testing import tiny_model


@pytest.fixture
def tiny(monkeypatch):
    import thinklens as tl

    m = tiny_model("llama")
    monkeypatch.setattr(tl, "load_model", lambda name, backend: m)
    return m


@pytest.fixture
def files(tmp_path, tiny, random_probe):
    probe = random_probe(tiny)
    probe.save(tmp_path / "probe")
    pool = tmp_path / "pool.jsonl"
    rows = [
        dict(prompt=f"They want to pick a lock {i}.", thinking="I can't help. " * (1 + i % 4))
        for i in range(10)
    ]
    pool.write_text("\n".join(json.dumps(r) for r in rows))
    return tmp_path / "probe", pool


def test_help_and_choices_match_the_library(capsys):
    for argv in (["judge"], ["judge", "select"], ["judge", "repair"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*argv, "--help"])
        assert "usage: thinklens judge" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        build_parser().parse_args(["judge", "select", "--help"])
    flat = "".join(capsys.readouterr().out.split())
    assert f"--method{{{','.join(METHODS)}}}" in flat
    assert f"--formats[{{{','.join(FORMATS)}}}" in flat


def test_select_then_repair(tmp_path, tiny, files, capsys):
    probe, pool = files
    out = tmp_path / "sel"
    argv = ["judge", "select", "tiny", str(probe), "--pool", str(pool), "--fraction", "0.3"]
    assert main([*argv, "--k", "2", "--out", str(out)]) == 0
    assert "selected 3 of 10 by cliff" in capsys.readouterr().out
    assert len(load_messages(out)) == 3
    assert load_manifest(out)["provenance"]["probe"]["path"] == str(probe)

    assert main([*argv, "--out", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main([*argv, "--out", str(out), "--overwrite", "--method", "random"]) == 0
    assert load_manifest(out)["provenance"]["method"] == "random"

    res = tmp_path / "repair.csv"
    rep = [
        "judge",
        "repair",
        "tiny",
        str(out),
        "--n-eval",
        "2",
        "--max-new-tokens",
        "2",
        "--epochs",
        "1",
    ]
    assert main([*rep, "--out", str(res)]) == 0
    printed = capsys.readouterr().out
    assert '"examples": 3' in printed and '"asr_after"' in printed
    row = read_table(res).iloc[0]
    assert row["n_harmful"] == 2 and 0 <= row["asr_before"] <= 1
    assert main([*rep, "--out", str(res)]) == 2
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--fraction", "0"], "fraction must be in (0, 1], got 0.0"),
        (["--fraction", "1.5"], "fraction must be in (0, 1], got 1.5"),
        (["--top-k", "11"], "top_k must be in 1..10"),
        (["--top-k", "1", "--fraction", "0.5"], "give --fraction or --top-k, not both"),
        (["--top-k", "1", "--prompts", "bundled:harmful"], "one candidate source"),
    ],
)
def test_select_bad_sizes(tmp_path, tiny, files, capsys, extra, message):
    probe, pool = files
    argv = [
        "judge",
        "select",
        "tiny",
        str(probe),
        "--pool",
        str(pool),
        "--out",
        str(tmp_path / "s"),
    ]
    assert main([*argv, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_select_refuses_empty_pools_and_foreign_probes(tmp_path, tiny, files, capsys, random_probe):
    probe, pool = files
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    out = str(tmp_path / "s")
    assert (
        main(
            [
                "judge",
                "select",
                "tiny",
                str(probe),
                "--pool",
                str(empty),
                "--top-k",
                "1",
                "--out",
                out,
            ]
        )
        == 2
    )
    assert "no records" in capsys.readouterr().err
    random_probe(tiny_model("llama", seed=1)).save(tmp_path / "other")
    argv = ["judge", "select", "tiny", str(tmp_path / "other"), "--pool", str(pool), "--top-k", "1"]
    assert main([*argv, "--out", out]) == 2
    assert "recompute it on this model" in capsys.readouterr().err
