"""``thinklens abliteration``: every subcommand end to end on a tiny model, and one-line errors."""

from __future__ import annotations

import json

import pytest

import thinklens as tl
from thinklens.app.cli import build_parser, main
from thinklens.interventions.abliteration.directions import RefusalDirections
from thinklens.testing import tiny_model

ACTIONS = ["directions", "apply", "search", "export", "evaluate"]


@pytest.mark.parametrize("argv", [["abliteration"], *[["abliteration", a] for a in ACTIONS]])
def test_help_everywhere(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*argv, "--help"])
    assert exit_.value.code == 0
    assert "usage: thinklens abliteration" in capsys.readouterr().out


@pytest.fixture
def tiny_cli(monkeypatch):
    m = tiny_model("llama", backend="nnsight")
    monkeypatch.setattr(tl, "load_model", lambda name, backend: m)
    return m


def test_directions_apply_search_export_evaluate(tiny_cli, tmp_path, capsys):
    dirs = tmp_path / "dirs"
    small = ["--n", "6", "--backend", "nnsight"]
    assert main(["abliteration", "directions", "tiny", "--out", str(dirs), *small]) == 0
    assert RefusalDirections.load(dirs, tiny_cli).meta["n_harmful"] == 6
    sel = ["--select", "--n-val", "2", "--kl-threshold", "9", "--thinking", "off"]
    argv = ["abliteration", "directions", "tiny", "--out", str(dirs), *small, *sel, "--overwrite"]
    assert main(argv) == 2  # a random model fails the steering check: the table is kept
    assert "candidate table" in capsys.readouterr().err
    assert (tmp_path / "dirs.candidates.csv").exists()
    assert main([*argv, "--induce-refusal-threshold=-1e9"]) == 0
    assert "selected position" in capsys.readouterr().out
    assert RefusalDirections.load(dirs).meta["selected"]["layer"] in (1,)
    assert (tmp_path / "dirs.candidates.csv").exists()

    ev = ["--n-eval", "2", "--max-new-tokens", "4", "--directions", str(dirs)]
    out = tmp_path / "edited"
    assert main(["abliteration", "apply", "tiny", *ev, "--out", str(out), "--evaluate"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["preset"] == "arditi" and "kl" in record["metrics"]
    assert "| refusals |" in (out / "README.md").read_text()
    assert main(["abliteration", "apply", "tiny", *ev, "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err

    db = ["--storage", str(tmp_path / "s.db")]
    assert main(["abliteration", "search", "tiny", *ev, *db, "--n-trials", "2"]) == 0
    assert "Pareto front" in capsys.readouterr().out
    exp = tmp_path / "trial0"
    assert (
        main(["abliteration", "export", "tiny", *ev, *db, "--trial", "0", "--out", str(exp)]) == 0
    )
    assert json.loads((exp / "thinklens.json").read_text())["metrics"]["trial"] == 0
    capsys.readouterr()

    assert main(["abliteration", "evaluate", "tiny", *ev, "--preset", "deccp"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert set(rows) == {"base", "edited"} and rows["base"]["kl"] == pytest.approx(0, abs=1e-9)


def test_directions_of_another_model_are_a_one_line_error(tiny_cli, tmp_path, capsys, monkeypatch):
    dirs = tmp_path / "dirs"
    assert main(["abliteration", "directions", "tiny", "--out", str(dirs), "--n", "4"]) == 0
    other = tiny_model("llama", backend="nnsight", seed=3)
    monkeypatch.setattr(tl, "load_model", lambda name, backend: other)
    capsys.readouterr()
    argv = ["abliteration", "apply", "x", "--directions", str(dirs), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("thinklens: error:") and "recompute it on this model" in err
    assert not (tmp_path / "o").exists()
