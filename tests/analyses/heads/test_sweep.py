"""Sweeps: strict configs, the cell grid, one row per cell, and resuming a killed sweep."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

import pytest

import thinklens.analyses.heads.sweep as sweep_mod
from thinklens.analyses.heads.ablation import evaluate_ablation
from thinklens.analyses.heads.sweep import SweepStore, run_sweep
from thinklens.analyses.heads.sweep_config import SweepConfig

YAML = """\
model: tiny
methods: [direct, attribution]
fractions: [0.1, 0.25]
modes: [zero, scale]
seeds: [0, 1]
data:
  n_score: 2
  n_eval: 2
  traces: {traces}
probe:
  path: {probe}
generation:
  max_new_tokens: 3
  batch_size: 4
"""

TOML = """\
model = "tiny"
methods = ["direct", "attribution"]
fractions = [0.1, 0.25]
modes = ["zero", "scale"]
seeds = [0, 1]

[data]
n_score = 2
n_eval = 2
traces = "{traces}"

[probe]
path = "{probe}"

[generation]
max_new_tokens = 3
batch_size = 4
"""


@pytest.fixture
def files(tmp_path, probe_and_traces):
    probe, traces = probe_and_traces
    args = dict(traces=traces, probe=probe)
    (tmp_path / "sweep.yaml").write_text(YAML.format(**args))
    (tmp_path / "sweep.toml").write_text(TOML.format(**args))
    return tmp_path


def _load(path) -> SweepConfig:
    """A sweep config file, without progress bars (as the tests run)."""
    return replace(SweepConfig.from_file(path), progress=False)


def test_yaml_and_toml_give_the_same_config(files):
    a, b = _load(files / "sweep.yaml"), _load(files / "sweep.toml")
    assert a == b
    assert a.fractions == (0.1, 0.25) and a.data.n_score == 2 and a.generation.max_new_tokens == 3
    assert a.out == str(files / "sweep.sqlite")  # relative to the config file
    # Greedy: each scored method runs once per (fraction, mode); random heads once per seed.
    cells = a.cells()
    assert len(cells) == 1 + 2 * 2 * 2 + 2 * 2 * 2
    assert len({c.key(a.setup_key()) for c in cells}) == len(cells)


@pytest.mark.parametrize(
    "raw, match",
    [
        (dict(model="m", fractoins=[0.1]), "unknown key 'fractoins' in config; known keys: model"),
        (dict(model="m", data=dict(n_scores=3)), "unknown key 'n_scores' in data"),
        (dict(model="m", fractions=[3]), r"fraction 3.0 is outside \(0, 1\]"),
        (dict(model="m", fractions=[0.0]), r"fraction 0.0 is outside \(0, 1\]"),
        (dict(model="m", methods=["gradient"]), "methods: 'gradient' is not one of"),
        (dict(model="m", modes=["half"]), "modes: 'half' is not one of zero, mean, scale"),
        (dict(model="m", backend="vllm"), "backend: 'vllm' is not one of transformer_lens"),
        (dict(model="m", seeds=["a"]), r"seeds\[0\] must be int"),
        (dict(model="m", data=dict(frame="yes")), "data.frame must be bool"),
        (dict(model="m", generation=3), "generation must be a table of keys"),
        (dict(methods=["direct"]), "lacks the required key 'model'"),
        (dict(model="m", fractions=[0.1, 0.1]), "without repeats"),
    ],
)
def test_bad_configs_are_clear_errors(raw, match):
    with pytest.raises(ValueError, match=match):
        SweepConfig.from_dict(raw)


def test_bad_config_files(tmp_path):
    (tmp_path / "c.yaml").write_text("model: m\nsurprise: 1\n")
    with pytest.raises(ValueError, match=r"c.yaml: unknown key 'surprise'"):
        SweepConfig.from_file(tmp_path / "c.yaml")
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(ValueError, match="is .yaml, .yml, .toml"):
        SweepConfig.from_file(tmp_path / "c.json")
    with pytest.raises(FileNotFoundError, match="no config file"):
        SweepConfig.from_file(tmp_path / "missing.yaml")


class Killed(Exception):
    pass


def test_a_killed_sweep_resumes_with_only_the_missing_cells(files, tiny, monkeypatch):
    cfg = _load(files / "sweep.yaml")
    n_cells = len(cfg.cells())
    calls: list[tuple] = []
    scored: list[str] = []
    real_score = sweep_mod.score_heads

    def counting_score(model, texts, method, *a, **kw):
        scored.append(method)
        return real_score(model, texts, method, *a, **kw)

    def evaluate(model, heads, *a, **kw):
        calls.append((tuple(heads), kw["mode"], kw["seed"]))
        if len(calls) == 4:  # killed while computing the fourth cell
            raise Killed
        return evaluate_ablation(model, heads, *a, **kw)

    monkeypatch.setattr(sweep_mod, "score_heads", counting_score)
    with pytest.raises(Killed):
        run_sweep(cfg, model=tiny, evaluate=evaluate)
    store = SweepStore(cfg.out)
    assert len(store.cells()) == 3  # whole rows only
    first = set(store.done())

    calls.clear()
    table = run_sweep(cfg, model=tiny, evaluate=evaluate_ablation_counter(calls))
    assert len(calls) == n_cells - 3  # only the missing cells ran
    assert scored == ["direct", "attribution"]  # head scores were computed once and reused
    assert len(table) == n_cells and table["key"].is_unique
    assert first <= set(table["key"])
    with sqlite3.connect(cfg.out) as con:
        assert con.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM cells").fetchone() == (
            n_cells,
            n_cells,
        )
        per_method = dict(con.execute("SELECT method, COUNT(*) FROM head_scores GROUP BY method"))
    assert per_method == {"direct": 12, "attribution": 12}

    calls.clear()  # a finished sweep does nothing (and loads no model)
    again = run_sweep(cfg, model=None, evaluate=evaluate_ablation_counter(calls))
    assert calls == [] and len(again) == n_cells


def evaluate_ablation_counter(calls: list):
    def evaluate(model, heads, *a, **kw):
        calls.append(tuple(heads))
        return evaluate_ablation(model, heads, *a, **kw)

    return evaluate


def test_sweep_rows_follow_the_rankings(files, tiny):
    cfg = _load(files / "sweep.yaml")
    table = run_sweep(cfg, model=tiny)
    store = SweepStore(cfg.out)
    direct = store.scores(cfg.setup_key(), "direct")
    row = table[(table["method"] == "direct") & (table["fraction"] == 0.25)].iloc[0]
    assert row["heads"] == " ".join(f"{l}.{h}" for l, h in sorted(direct.top(fraction=0.25)))
    assert row["n_heads"] == 3
    base = table[table["method"] == "none"].iloc[0]
    assert base["n_heads"] == 0 and base["kl"] == pytest.approx(0.0, abs=1e-7)
    random_rows = table[(table["method"] == "random") & (table["fraction"] == 0.1)]
    assert len(random_rows) == 4 and random_rows["n_heads"].eq(1).all()
    assert set(store.query("SELECT DISTINCT mode FROM cells")["mode"]) == {"none", "zero", "scale"}
