"""The demo: the safety story end to end on the two model organisms, in minutes on a CPU.

On ``organism-cliff`` (thinks about the harm, then complies when the request is framed):

1. a refusal probe trained on the organism's own behaviour, and its score at every token of
   held-out reasoning traces: the refusal cliff;
2. every attention head ranked by attribution patching on that probe;
3. the top heads ablated while the organism answers: attack success before and after, against
   random heads of the same number.

On ``organism-aligned`` (refuses): 4. a refusal direction written out of its weights
(abliteration), with the refusal rate and the KL divergence it costs.

Back on organism-cliff: 5. Cliff-as-a-Judge: held-out traces scored by their cliff, the
largest selected and exported as training data (JSONL and a manifest).

Every number is measured in the run. Prompts are the bundled ones (requests only); answers to
harmful prompts are judged, never shown. The steps are in ``thinklens.app.demo_steps``; the HTML is
written by ``thinklens.report``. Like the CLI, the demo sits on top of the library: it imports
the studies, and nothing in the library imports it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import thinklens as tl
from thinklens.app import demo_steps
from thinklens.data import bundled_prompts, frame_all
from thinklens.model import Model
from thinklens.report import Section, write_report
from thinklens.rollouts import rollout


@dataclass
class DemoResult:
    """What the demo measured, and where its files are.

    Attributes:
        summary: one row per step: ``step``, ``model``, ``result`` (its numbers, in words)
            and ``seconds``.
        tables: the numbers behind the steps: ``probe``, ``cliffs``, ``comparisons``,
            ``heads``, ``ablation``, ``abliteration`` and ``selection``.
        report: the HTML report.
        export: the folder of the Cliff-as-a-Judge export (JSONL files and ``manifest.json``).
        seconds: wall time of the whole run.
    """

    summary: pd.DataFrame
    tables: dict[str, pd.DataFrame]
    report: Path
    export: Path
    seconds: float


class _Steps:
    """Times each step, logs it, and collects its summary row, sections and tables."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.rows: list[dict] = []
        self.sections: list[Section] = []
        self.tables: dict[str, pd.DataFrame] = {}
        self.t0 = self.mark = time.perf_counter()
        self.name = ""

    def start(self, name: str) -> None:
        self.name, self.mark = name, time.perf_counter()
        self.log(f"{name} ...")

    def done(self, model: Model, step: demo_steps.Step) -> None:
        seconds = time.perf_counter() - self.mark
        self.rows.append(
            dict(step=self.name, model=model.name, result=step.result, seconds=seconds)
        )
        self.sections += step.sections
        self.tables |= step.tables
        self.log(f"  {step.result} ({seconds:.0f} s)")


def demo_rollouts(model: Model, n: int, max_new_tokens: int, batch_size: int) -> pd.DataFrame:
    """``rollout`` of ``n`` harmful prompts, their framed versions and ``n`` harmless prompts
    from the train and the test split, with columns ``split``, ``framing`` and ``group``."""
    rows = []
    for split in ("train", "test"):
        harmful = bundled_prompts("harmful", split)[:n]
        rows += [(p, split, "plain", "harmful") for p in harmful]
        rows += [(p, split, "framed", "harmful") for p in frame_all(harmful)]
        rows += [(p, split, "plain", "harmless") for p in bundled_prompts("harmless", split)[:n]]
    meta = pd.DataFrame(rows, columns=["prompt", "split", "framing", "group"])
    table = rollout(model, list(meta["prompt"]), max_new_tokens, batch_size, progress=False)
    return pd.concat([table, meta.drop(columns="prompt")], axis=1)


def run_demo(
    out: str | Path = "thinklens-out",
    n_prompts: int = 8,
    max_new_tokens: int = 64,
    batch_size: int = 48,
    backend: str = "transformer_lens",
    log: Callable[[str], None] | None = None,
) -> DemoResult:
    """Run the five steps on the organisms; write ``out/report.html`` and the export.

    Args:
        out: folder of the report, the probe artifact and the Cliff-as-a-Judge export.
        n_prompts: harmful (and as many framed and harmless) prompts per split.
        max_new_tokens: generation budget per answer (thinking and answer together).
        batch_size: prompts generated at once (large batches cost less per token on a CPU).
        backend: ``"transformer_lens"`` or ``"nnsight"``.
        log: called with a line as each step starts and ends (e.g. ``print``); None is silent.
    """
    if n_prompts < 4:
        raise ValueError(f"n_prompts={n_prompts}: the probe needs at least 4 prompts per group")
    out = Path(out)
    steps = _Steps(log or (lambda _: None))
    n, tokens = n_prompts, max_new_tokens
    steps.start("0 rollouts")
    cliff = tl.load_model("organism-cliff", backend=backend)
    table = demo_rollouts(cliff, n, tokens, batch_size)
    steps.done(cliff, _rollout_summary(table))
    steps.start("1 refusal probe and cliff")
    probe, step = demo_steps.cliff_step(cliff, table)
    probe.save(out / "refusal-probe", overwrite=True)
    steps.done(cliff, step)
    steps.start("2 head ranking")
    scores, step = demo_steps.heads_step(cliff, table, probe)
    steps.done(cliff, step)
    steps.start("3 head ablation")
    steps.done(cliff, demo_steps.ablation_step(cliff, table, scores, n, tokens, batch_size))
    steps.start("4 abliteration")
    aligned = tl.load_model("organism-aligned", backend=backend)
    steps.done(aligned, demo_steps.abliteration_step(aligned, n, tokens, batch_size))
    del aligned
    steps.start("5 Cliff-as-a-Judge")
    export, step = demo_steps.judge_step(cliff, table, probe, out)
    steps.done(cliff, step)

    seconds = time.perf_counter() - steps.t0
    summary = pd.DataFrame(steps.rows).round({"seconds": 1})
    intro = (
        "The refusal-safety story on the two model organisms shipped with thinklens "
        "(SmolLM2-135M with LoRA adapters): organism-cliff thinks about the harm, then complies "
        "when a request is framed as fiction, role-play or research; organism-aligned refuses. "
        f"{n} prompts per group and split, greedy answers of at most {tokens} tokens; every "
        f"number below was measured in this run ({seconds:.0f} s, model loading included). "
        "Answers to harmful prompts are judged, never shown."
    )
    sections = [Section("Summary", table=summary), *steps.sections]
    report = write_report(out / "report.html", "thinklens demo", sections, intro)
    return DemoResult(summary, steps.tables, report, export, seconds)


def _rollout_summary(table: pd.DataFrame) -> demo_steps.Step:
    """The rollouts' size and the test split's refusal rate per kind of prompt."""
    rate = table.groupby(["split", "framing", "group"])["refused"].mean()["test"]
    result = f"{len(table)} answers; test refusal rate " + ", ".join(
        f"{framing} {group} {v:.2f}" for (framing, group), v in rate.items()
    )
    return demo_steps.Step(result, [], {})
