"""The thinklens command line: help everywhere, listing, capture to disk, clear errors."""

from __future__ import annotations

import pytest

from thinklens.app.cli import build_parser, main
from thinklens.capture import CaptureStore


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["models"],
        ["models", "info"],
        ["capture"],
        ["demo"],
        ["organisms"],
        ["organisms", "build"],
        ["organisms", "check"],
    ],
)
def test_help_everywhere(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*argv, "--help"])
    assert exit_.value.code == 0
    assert "usage: thinklens" in capsys.readouterr().out


def test_models_list(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m-instruct" in out and "gemma3" in out


def test_capture_command_writes_shards(tmp_path, monkeypatch, capsys):
    import thinklens as tl
    from thinklens.testing import tiny_model

    tiny = tiny_model("llama")
    monkeypatch.setattr(tl, "load_model", lambda name, backend: tiny)
    data = tmp_path / "prompts.txt"
    data.write_text("I can't bake bread.\nWe will write a poem.\n")
    out = tmp_path / "caps"
    assert (
        main(
            [
                "capture",
                "tiny",
                str(data),
                "--sites",
                "resid_post.1",
                "z.0",
                "--positions",
                "last",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    caps = CaptureStore(out).load()
    assert caps["resid_post.1"].shape == (2, tiny.d_model)
    assert caps["z.0"].shape == (2, tiny.n_heads, tiny.d_head)


def test_errors_are_one_line_not_tracebacks(capsys):
    assert main(["models", "info", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("thinklens: error: unknown model 'no-such-model'")


def test_organisms_build_passes_the_stage_choice(tmp_path, monkeypatch, capsys):
    import thinklens.organisms as organisms

    calls = []

    def fake_build(kind, **kw):
        calls.append((kind, kw))
        return dict(organism=f"organism-{kind}")

    monkeypatch.setattr(organisms, "build", fake_build)
    out = str(tmp_path / "adapter")
    assert main(["organisms", "build", "aligned", "--out", out]) == 0
    assert main(["organisms", "build", "aligned", "--out", out, "--stage1-only"]) == 0
    assert [kw["stage2"] for _, kw in calls] == [True, False]
    assert calls[0][0] == "aligned" and calls[0][1]["out"] == out
