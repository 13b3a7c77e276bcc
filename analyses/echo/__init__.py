"""Echo of Prompt: reasoning traces that restate the question, the Echo Likelihood Gap, the
attention from the answer to the question and the echo, and Echoic Prompting (README ideas: Trace,
Capture).
"""

from thinklens.analyses.echo.attention import bucket_masses, compare_groups, echo_attention
from thinklens.analyses.echo.config import (
    EchoAttentionConfig,
    EchoGapConfig,
    EchoPromptingConfig,
    EchoSpansConfig,
)
from thinklens.analyses.echo.gap import echo_gap, gap_by_bin
from thinklens.analyses.echo.plots import attention_by_layer, echo_example, gap_distribution
from thinklens.analyses.echo.prompting import (
    causal_insertion,
    echoic_prompting,
    generate_traces,
    prompting_study,
    rejection_accuracy,
)
from thinklens.analyses.echo.published import (
    published_buckets,
    published_gap,
    published_tail_channel,
    published_trim,
)
from thinklens.analyses.echo.spans import PUBLISHED_PROMPT, echo_spans
from thinklens.analyses.echo.traces import (
    EchoTrace,
    read_echo_traces,
    spans_table,
    trace_from_record,
)

__all__ = [
    "PUBLISHED_PROMPT",
    "EchoAttentionConfig",
    "EchoGapConfig",
    "EchoPromptingConfig",
    "EchoSpansConfig",
    "EchoTrace",
    "attention_by_layer",
    "bucket_masses",
    "causal_insertion",
    "compare_groups",
    "echo_attention",
    "echo_example",
    "echo_gap",
    "echo_spans",
    "echoic_prompting",
    "gap_by_bin",
    "gap_distribution",
    "generate_traces",
    "prompting_study",
    "published_buckets",
    "published_gap",
    "published_tail_channel",
    "published_trim",
    "read_echo_traces",
    "rejection_accuracy",
    "spans_table",
    "trace_from_record",
]
