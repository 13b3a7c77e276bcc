"""The configs of ``thinklens judge select`` and ``judge repair``: their flags, their config-file
keys and their defaults (those of the functions they call)."""

from __future__ import annotations

from dataclasses import dataclass

from thinklens.analyses.judge.export import FORMATS
from thinklens.analyses.judge.pool import build_pool
from thinklens.analyses.judge.repair import RepairConfig, safety_eval
from thinklens.analyses.judge.select import Method, score_pool, select
from thinklens.config import ModelConfig, default_of, option


@dataclass(frozen=True, kw_only=True)
class JudgeSelectConfig(ModelConfig):
    """Cliff-as-a-Judge: score candidate safety examples, select the best, export them.

    The pool is ``prompts`` the model thinks about, or ``pool`` records that already hold the
    thinking; ``fraction`` or ``top_k`` sets the size (``all`` takes neither).
    """

    probe: str = option(
        help="a probe saved by `thinklens cliff train` on this model", positional=True
    )
    prompts: str | None = option(None, help="harmful prompts (any data); the model thinks")
    pool: str | None = option(None, help="JSONL/CSV records with prompt and thinking instead")
    frame: bool = option(False, help="wrap the prompts in fiction/role-play")
    fraction: float | None = option(None, help="share of the pool, (0, 1]")
    top_k: int | None = option(None, help="number of candidates")
    method: Method = option(default_of(select, "method"), help="how candidates are ranked")
    seed: int = option(default_of(select, "seed"), help="of framings, ties and random picks")
    k: int = option(default_of(score_pool, "k"), help="cliff tail length in tokens")
    limit: int | None = option(None, help="candidates read")
    max_new_tokens: int = option(
        default_of(build_pool, "max_new_tokens"), help="thinking tokens per prompt"
    )
    batch_size: int = option(default_of(score_pool, "batch_size"), help="texts per pass")
    formats: tuple[str, ...] = option(FORMATS, choices=FORMATS, help="export formats")
    out: str = option(help="export folder")
    overwrite: bool = option(False, help="replace the folder at --out")

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.prompts is None) == (self.pool is None):
            raise ValueError("give one candidate source: --prompts or --pool")
        if self.fraction is not None and self.top_k is not None:
            raise ValueError("give --fraction or --top-k, not both")


@dataclass(frozen=True, kw_only=True)
class JudgeRepairConfig(ModelConfig):
    """LoRA SFT on an exported selection; attack success before and after.

    The training settings (``epochs`` to ``seed``) are ``RepairConfig``'s, with its defaults.
    """

    data: str = option(help="a folder written by `thinklens judge select`", positional=True)
    harmful: str = option("bundled:harmful", help="held-out harmful prompts")
    harmless: str = option("bundled:harmless", help="held-out harmless prompts")
    frame: bool = option(False, help="frame the harmful prompts")
    n_eval: int = option(48, help="prompts per evaluation set")
    xstest: str | None = option(
        None, help="XSTest's xstest_prompts.csv (or its folder): also measure over-refusal"
    )
    n_xstest: int = option(50, help="XSTest safe prompts, in turn from each type")
    max_new_tokens: int = option(default_of(safety_eval, "max_new_tokens"))
    epochs: int = option(default_of(RepairConfig, "epochs"))
    lr: float = option(default_of(RepairConfig, "lr"), help="learning rate")
    rank: int = option(default_of(RepairConfig, "rank"), help="LoRA rank")
    batch_size: int = option(default_of(RepairConfig, "batch_size"))
    seed: int = option(default_of(RepairConfig, "seed"))
    out: str | None = option(None, help="results table (.csv, .jsonl or .parquet)")
    overwrite: bool = option(False, help="replace the table at --out")

    def training(self) -> RepairConfig:
        """The LoRA settings of the repair."""
        return RepairConfig(self.epochs, self.lr, self.rank, self.batch_size, self.seed)
