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
    par = [*db, "--n-trials", "3", "--parallel-trials", "2", "--study-name", "par"]
    assert main(["abliteration", "search", "tiny", *ev, *par, "--space", "published"]) == 0
    assert "attn.o_proj.max_weight" in capsys.readouterr().out  # Heretic 1.4.0's names
    flight = [*db, "--n-trials", "3", "--schedule", "in_flight", "--study-name", "flight"]
    assert main(["abliteration", "search", "tiny", *ev, *flight]) == 0
    assert "Pareto front" in capsys.readouterr().out
    # The tiny model does not think: auto counts by full generation, and a cheaper objective
    # (the answer after the model's own thinking) is refused with the reason.
    import optuna

    study = optuna.load_study(study_name="thinklens-heretic", storage=f"sqlite:///{db[1]}")
    assert study.user_attrs["refusal_objective"] == "full"
    fast = ["--refusal-objective", "answer", "--study-name", "other"]
    assert main(["abliteration", "search", "tiny", *ev, *db, "--n-trials", "1", *fast]) == 2
    assert "think" in capsys.readouterr().err
    exp = tmp_path / "trial0"
    assert (
        main(["abliteration", "export", "tiny", *ev, *db, "--trial", "0", "--out", str(exp)]) == 0
    )
    assert json.loads((exp / "thinklens.json").read_text())["metrics"]["trial"] == 0
    capsys.readouterr()
    peft = ["--trial", "0", "--format", "peft", "--out", str(tmp_path / "peft")]
    assert main(["abliteration", "export", "tiny", *ev, *db, *peft]) == 2
    assert "give --lora-rank 3" in capsys.readouterr().err
    assert main(["abliteration", "export", "tiny", *ev, *db, *peft, "--lora-rank", "3"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["form"] == "peft" and record["low_rank"] == [3]
    assert json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["r"] == 3

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


def test_published_flags_reach_the_python_api(tiny_cli, tmp_path, capsys):
    """``--reading``, ``--response-prefix``, ``--protocol``, ``--metrics-protocol``: the CLI
    gives what the same arguments give in Python."""
    from thinklens.analyses.abliteration import AbliterationMetrics
    from thinklens.data import load_prompts
    from thinklens.interventions.abliteration import apply, compute_directions

    dirs = tmp_path / "dirs"
    flags = ["--n", "6", "--reading", "heretic", "--response-prefix", "<think></think>\n"]
    assert main(["abliteration", "directions", "tiny", "--out", str(dirs), *flags]) == 0
    got = RefusalDirections.load(dirs, tiny_cli)
    harmful = load_prompts("bundled:harmful", limit=6, split="train")
    harmless = load_prompts("bundled:harmless", limit=6, split="train")
    want = compute_directions(
        tiny_cli,
        harmful,
        harmless,
        reading="heretic",
        response_prefix="<think></think>\n",
        progress=False,
    )
    assert (got.directions() - want.directions()).abs().max() < 1e-6

    deccp = tmp_path / "deccp"
    argv = ["abliteration", "directions", "tiny", "--out", str(deccp), "--n", "6"]
    assert main([*argv, "--reading", "deccp"]) == 0
    out = tmp_path / "edited"
    ev = ["--n-eval", "2", "--max-new-tokens", "3", "--directions", str(deccp)]
    argv = ["abliteration", "apply", "tiny", *ev, "--preset", "deccp", "--out", str(out)]
    capsys.readouterr()
    assert main([*argv, "--protocol", "published", "--evaluate", "--metrics-protocol",
                 "published"]) == 0  # fmt: skip
    record = json.loads(capsys.readouterr().out)
    assert record["protocol"] == "published"
    deccp_dirs = compute_directions(tiny_cli, harmful, harmless, reading="deccp")
    python = apply(tiny_cli, "deccp", deccp_dirs, protocol="published")
    metrics = AbliterationMetrics.prepare(
        tiny_cli,
        load_prompts("bundled:harmful", limit=2, split="test"),
        load_prompts("bundled:harmless", limit=2, split="test"),
        max_new_tokens=3,
        protocol="published",
    )
    assert record["metrics"]["kl"] == pytest.approx(metrics(python)["kl"], rel=1e-5, abs=1e-9)
