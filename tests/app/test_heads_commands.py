"""``thinklens heads score|ablate|sweep|report`` on a tiny model."""

from __future__ import annotations

import pytest
import torch

from thinklens.app.cli import build_parser, main
from thinklens.interventions.heads.scores import HeadScores
from thinklens.tables import read_table
from thinklens.testing import tiny_model


@pytest.fixture
def tiny(monkeypatch):
    import thinklens as tl
    import thinklens.loading

    m = tiny_model("llama")
    monkeypatch.setattr(tl, "load_model", lambda name, backend="transformer_lens": m)
    monkeypatch.setattr(thinklens.loading, "load_model", lambda name, backend="x": m)
    return m


@pytest.mark.parametrize(
    "argv",
    [["heads"], ["heads", "score"], ["heads", "ablate"], ["heads", "sweep"], ["heads", "report"]],
)
def test_help(argv, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    assert "usage: thinklens" in capsys.readouterr().out


def test_score_then_ablate(tmp_path, tiny, capsys, probe_and_traces):
    probe, traces = probe_and_traces
    out, plot = tmp_path / "scores.csv", tmp_path / "heads.html"
    argv = ["heads", "score", "tiny", "--probe", str(probe), "--traces", str(traces)]
    assert main([*argv, "--out", str(out), "--plot", str(plot)]) == 0
    text = capsys.readouterr().out
    assert "attribution vs ablation: Spearman" in text and "scores of 2 texts" in text
    table = read_table(out)
    assert sorted(table["method"].unique()) == ["ablation", "attribution", "direct"]
    assert len(table) == 3 * tiny.n_layers * tiny.n_heads
    assert plot.read_text().count("plotly") > 0
    ranked = HeadScores.load(out, "attribution")

    result = tmp_path / "asr.csv"
    argv = ["heads", "ablate", "tiny", "--scores", str(out), "--fraction", "0.25", "--limit", "2"]
    assert main([*argv, "--max-new-tokens", "3", "--random-seeds", "0", "--out", str(result)]) == 0
    df = read_table(result)
    assert list(df["condition"]) == ["none", "ablation", "attribution", "direct", "random"]
    assert df["n_heads"].tolist() == [0, 3, 3, 3, 3]
    top = " ".join(f"{l}.{h}" for l, h in sorted(ranked.top(fraction=0.25)))
    assert df.set_index("condition").loc["attribution", "heads"] == top


def test_bad_cli_inputs_are_clear_errors(tmp_path, tiny, capsys, probe_and_traces):
    probe, traces = probe_and_traces
    scores = tmp_path / "scores.csv"
    HeadScores(torch.zeros(3, 4), "direct").frame().to_csv(scores, index=False)
    argv = ["heads", "ablate", "tiny", "--scores", str(scores), "--limit", "2"]
    assert main([*argv, "--fraction", "1.5"]) == 2
    assert "fraction 1.5 is outside (0, 1]" in capsys.readouterr().err
    wrong = tmp_path / "wrong.csv"
    HeadScores(torch.zeros(5, 4), "direct").frame().to_csv(wrong, index=False)
    assert main(["heads", "ablate", "tiny", "--scores", str(wrong)]) == 2
    assert "computed on another model" in capsys.readouterr().err
    argv = ["heads", "score", "tiny", "--traces", str(traces), "--out", str(scores)]
    assert main([*argv, "--methods", "ablation"]) == 2
    assert "needs a refusal probe" in capsys.readouterr().err


def test_sweep_run_and_report(tmp_path, tiny, capsys, probe_and_traces):
    probe, traces = probe_and_traces
    config = tmp_path / "sweep.yaml"
    config.write_text(
        "model: tiny\nmethods: [direct, attribution]\nfractions: [0.25]\nseeds: [0, 1]\n"
        f"data: {{n_score: 2, n_eval: 2, traces: {traces}}}\nprobe: {{path: {probe}}}\n"
        "generation: {max_new_tokens: 3}\nout: results.sqlite\n"
    )
    run = ["heads", "sweep", "--config", str(config), "--no-progress"]
    assert main(run) == 0
    assert "5 cells in" in capsys.readouterr().out
    assert main(run) == 0  # resumes: nothing left to do
    db = tmp_path / "results.sqlite"
    html, cells = tmp_path / "report.html", tmp_path / "cells.csv"
    assert main(["heads", "report", str(db), "--out", str(html), "--table", str(cells)]) == 0
    assert html.exists() and len(read_table(cells)) == 5
    assert "heads ablated" in html.read_text() and "spearman" in html.read_text()

    config.write_text("model: tiny\nfractoins: [0.1]\n")
    assert main(["heads", "sweep", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'fractoins' in config" in err and "known keys: model" in err
    assert main(["heads", "report", str(tmp_path / "none.sqlite")]) == 2
    assert "no sweep database" in capsys.readouterr().err


def test_sweep_flags_override_the_config_file(
    tmp_path, tiny, capsys, probe_and_traces, monkeypatch
):
    import thinklens.analyses.heads.sweep as sweep_mod

    probe, traces = probe_and_traces
    config = tmp_path / "sweep.toml"
    config.write_text(
        'model = "tiny"\nfractions = [0.25]\nout = "from-file.sqlite"\n'
        f'[data]\nn_score = 2\nn_eval = 2\ntraces = "{traces}"\n[probe]\npath = "{probe}"\n'
    )
    seen = []
    monkeypatch.setattr(sweep_mod, "run_sweep", lambda cfg: seen.append(cfg) or _no_cells())
    flags = ["--data.n-eval", "3", "--seeds", "4", "5", "--out", str(tmp_path / "flag.sqlite")]
    assert main(["heads", "sweep", "other", "--config", str(config), *flags]) == 0
    cfg = seen[0]
    assert cfg.model == "other" and cfg.seeds == (4, 5)  # flags win over the file
    assert cfg.data.n_eval == 3 and cfg.data.n_score == 2  # one nested key replaced, not all
    assert cfg.fractions == (0.25,)  # from the file
    assert cfg.out == str(tmp_path / "flag.sqlite")
    assert main(["heads", "sweep", "--config", str(config)]) == 0
    assert seen[1].out == str(tmp_path / "from-file.sqlite")  # a file's path is the file's
    assert main(["heads", "sweep", "--fractions", "0.25"]) == 2
    assert "model is required" in capsys.readouterr().err


def _no_cells():
    import pandas as pd

    cols = ["method", "fraction", "mode", "seed", "n_heads", "asr", "harmless_refusal_rate", "kl"]
    return pd.DataFrame(columns=cols)
