"""The one builder of `loss_fn(params, batch, rng) -> (loss, aux)` from a pure objective.

Every objective in this package has the signature

  objective(policy_logp, inputs, config) -> (loss, aux)

where `policy_logp` is the only argument that depends on the parameters
(per-token log pi_theta of the batch's tokens, or a view of them such as
SCoRe's two attempts), `inputs` is the objective's own batch (a NamedTuple
read off the packed batch's fields) and `config` its frozen dataclass. So
the train step only does value_and_grad + the optimizer:

  loss_fn = build_loss_fn(score.stage1_loss, model_logprobs(lm, 64, attempts_view), score_inputs, cfg)
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from scorejax.objectives.logprobs import sequence_logprobs

LogprobsFn = Callable[[Any, Mapping], Any]


def build_loss_fn(objective: Callable, logprobs_fn: LogprobsFn, inputs: Callable[[Mapping], Any],
                  config: Any) -> Callable:
  """`loss_fn(params, batch, rng) = objective(logprobs_fn(params, batch), inputs(batch), config)`.

  Args:
    objective: e.g. `score.stage1_loss`, `critic.critic_rl_loss`, `sft.sft_loss`.
    logprobs_fn: (params, batch) -> the objective's `policy_logp`, usually
      `model_logprobs(lm, chunk)`.
    inputs: batch -> the objective's batch (reference log-probs, masks, rewards).
    config: the objective's frozen config.
  """

  def loss_fn(params, batch, rng=None):
    del rng  # the objectives here are deterministic given the batch
    return objective(logprobs_fn(params, batch), inputs(batch), config)

  return loss_fn


def model_logprobs(lm, chunk_size: int, view: Callable[[Any], Any] = lambda logp_BxT: logp_BxT) -> LogprobsFn:
  """(params, batch) -> view(log pi_theta(tokens_BxT)): one teacher-forced forward pass, chunked log-probs."""

  def logprobs_fn(params, batch):
    return view(sequence_logprobs(lm, params, batch["tokens_BxT"], batch["positions_BxT"], batch["mask_BxT"],
                                  chunk_size=chunk_size))

  return logprobs_fn
