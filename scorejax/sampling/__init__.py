"""In-JAX sampling: prefill + `lax.while_loop` decode, sampling rules, multi-turn continuation."""

from scorejax.sampling.buckets import Buckets, left_pad, unpad
from scorejax.sampling.continuation import continue_sampling, packed_context, resample_from_scratch
from scorejax.sampling.rules import Greedy, Rule, Sample, model_logprobs, rule_from_flags, sampling_logprobs
from scorejax.sampling.sampler import (
    Context,
    DecodeState,
    Rollout,
    SamplerConfig,
    repeat_prompts,
    sample,
    sample_many,
)

__all__ = [
    "Buckets", "Context", "DecodeState", "Greedy", "Rollout", "Rule", "Sample", "SamplerConfig",
    "continue_sampling", "left_pad", "model_logprobs", "packed_context", "repeat_prompts",
    "resample_from_scratch", "rule_from_flags", "sample", "sample_many", "sampling_logprobs", "unpad",
]
