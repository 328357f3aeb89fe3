"""Objectives: pure functions of arrays, safe under jit, grad and vmap.

  logprobs.py         token log-probs from hidden states, chunked over the sequence
                      so [B, T, V] logits never exist (forward or backward)
  kl.py               per-token KL estimators k1 / k2 / k3, registered by name
  advantages.py       none / batch_mean / rloo / grpo, registered by name
  policy_gradient.py  REINFORCE with a KL penalty; PPO clipped surrogate per token
                      and per sequence
  score.py            SCoRe Stage I and Stage II, and the single-turn / STaR / Pair-SFT baselines
  spc.py              SPC offline loss (sequence-level clipped ratio + SFT)
  critic.py           DeepCritic earliest-error reward and RL loss
  sft.py              masked SFT negative log-likelihood
  loss.py             build_loss_fn: objective + log-probs + inputs -> loss_fn(params, batch)

Every objective has the signature `objective(policy_logp, batch, config) ->
(loss, aux)`; only `policy_logp` depends on the parameters.
"""
