"""Bind an objective to a batch: the `loss_fn(params) -> (loss, aux)` a train step differentiates.

Every objective in this package has the signature

  objective(policy_logp, batch, config) -> (loss, aux)

where `policy_logp` is the only argument that depends on the parameters
(per-token log pi_theta of the batch's responses, or a tuple of them), and
`batch` / `config` are data. The train step then only does

  loss_fn = make_loss_fn(score.stage1_loss, logprobs_fn, batch, config)
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
"""

from collections.abc import Callable
from typing import Any


def make_loss_fn(objective: Callable, logprobs_fn: Callable, batch: Any, config: Any) -> Callable:
  """`loss_fn(params) = objective(logprobs_fn(params), batch, config)`.

  Args:
    objective: e.g. `score.stage1_loss`, `spc.spc_loss`, `critic.critic_rl_loss`, `sft.sft_loss`.
    logprobs_fn: params -> the objective's `policy_logp` for this batch (the
      model forward, usually closed over the batch's tokens, ending in
      `logprobs.token_logprobs`).
    batch: the objective's batch (reference log-probs, masks, rewards, ...).
    config: the objective's frozen config dataclass.
  """

  def loss_fn(params):
    return objective(logprobs_fn(params), batch, config)

  return loss_fn
