"""The one builder of `loss_fn(params, batch) -> (loss, aux)` from a pure objective.

Every objective in this package has the signature

  objective(policy_logp, inputs, config) -> (loss, aux)

where `policy_logp` is the only argument that depends on the parameters
(per-token log pi_theta of the batch's tokens, or a view of them such as
SCoRe's two attempts), `inputs` is the objective's own batch (a NamedTuple
read off the packed batch's fields) and `config` its frozen dataclass. So
the train step only does value_and_grad + the optimizer:

  loss_fn = build_loss_fn(score.stage1_loss, model_logprobs(lm, 64, attempts_view), score_inputs, cfg)
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from scorejax.objectives.logprobs import sequence_logprobs

LogprobsFn = Callable[[Any, Mapping], Any]


def build_loss_fn(objective: Callable, logprobs_fn: LogprobsFn, inputs: Callable[[Mapping], Any],
                  config: Any) -> Callable:
  """`loss_fn(params, batch) = objective(logprobs_fn(params, batch), inputs(batch), config)`.

  Args:
    objective: e.g. `score.stage1_loss`, `critic.critic_rl_loss`, `sft.sft_loss`.
    logprobs_fn: (params, batch) -> the objective's `policy_logp`, usually
      `model_logprobs(lm, chunk)`.
    inputs: batch -> the objective's batch (reference log-probs, masks, rewards).
    config: the objective's frozen config.
  """

  def loss_fn(params, batch):  # deterministic given the batch: its samples were drawn when it was made
    return objective(logprobs_fn(params, batch), inputs(batch), config)

  return loss_fn


# A training batch's per-row LoRA dropout seeds (`phases.PhaseRunner` adds them when config.lora.dropout > 0).
DROPOUT_SEEDS = "lora_dropout_seed_B"


def model_logprobs(lm, chunk_size: int, view: Callable[[Any], Any] = lambda logp_BxT: logp_BxT,
                   temperature: float = 1.0) -> LogprobsFn:
  """(params, batch) -> view(log pi_theta(tokens_BxT)): one teacher-forced forward pass, chunked log-probs.

  `temperature`: log-probs of softmax(logits / temperature), the distribution a sampler at that
  temperature draws from, so that an on-policy objective trains the policy its rollouts came from.
  """

  def logprobs_fn(params, batch):
    return view(sequence_logprobs(lm, params, batch["tokens_BxT"], batch["positions_BxT"], batch["mask_BxT"],
                                  chunk_size=chunk_size, temperature=temperature,
                                  dropout_seed_B=batch.get(DROPOUT_SEEDS)))

  return logprobs_fn
