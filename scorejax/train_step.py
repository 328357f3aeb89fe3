"""The sharded optimizer step: value_and_grad of an objective plus an optax update.

Every method plugs in a loss factory's `loss_fn(params, batch) -> (loss,
aux)` (objectives are deterministic given the batch: every sample is drawn
when the batch is made); this module owns what is common to all of them: the optimizer,
gradient accumulation over micro-batches, global-norm clipping, skipping
non-finite updates, and the jit with shardings and donated state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from scorejax import parallel

LossFn = Callable[[Any, Any], tuple[jax.Array, dict[str, jax.Array]]]


class TrainState(NamedTuple):
  """Everything a step reads and writes; a checkpoint saves exactly this."""

  step: jax.Array  # int32 scalar: optimizer steps taken (skipped ones included)
  params: Any  # model parameters (a nested dict of arrays)
  opt_state: Any  # optax state, sharded like the parameters
  # A typed PRNG key split once per step. No objective reads it (each is deterministic given its batch,
  # whose samples are drawn from (seed, phase, step)); it stays so that every saved checkpoint restores.
  rng: jax.Array
  nonfinite_steps: jax.Array  # int32 scalar: steps whose update was skipped


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """AdamW with warmup and a constant or cosine schedule."""

  learning_rate: float = 1e-5  # peak learning rate
  warmup_steps: int = 0  # linear warmup from 0 to the peak
  schedule: str = "constant"  # "constant" or "cosine" (decays to 0 at total_steps)
  total_steps: int = 1000  # only read by the cosine schedule
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  weight_decay: float = 0.0  # decoupled (AdamW)
  grad_clip_norm: float | None = 1.0  # global-norm clipping; None disables it
  grad_accum_steps: int = 1  # micro-batches per step; the batch must split evenly


def learning_rate_schedule(cfg: OptimizerConfig) -> optax.Schedule:
  if cfg.schedule == "constant":
    decay = optax.constant_schedule(cfg.learning_rate)
  elif cfg.schedule == "cosine":
    decay = optax.cosine_decay_schedule(cfg.learning_rate, max(1, cfg.total_steps - cfg.warmup_steps))
  else:
    raise ValueError(f"optimizer.schedule={cfg.schedule!r}; expected 'constant' or 'cosine'")
  if cfg.warmup_steps <= 0:
    return decay
  warmup = optax.linear_schedule(0.0, cfg.learning_rate, cfg.warmup_steps)
  return optax.join_schedules([warmup, decay], [cfg.warmup_steps])


def make_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
  clip = [optax.clip_by_global_norm(cfg.grad_clip_norm)] if cfg.grad_clip_norm else []
  return optax.chain(*clip, optax.adamw(learning_rate_schedule(cfg), b1=cfg.b1, b2=cfg.b2,
                                        eps=cfg.eps, weight_decay=cfg.weight_decay))


# ----------------------------------------------------------------------------
# State, created already sharded
# ----------------------------------------------------------------------------


def state_shardings(abstract_state: TrainState, mesh: Mesh, rules=parallel.DEFAULT_RULES) -> TrainState:
  """Shardings of a TrainState: parameters and their optimizer moments by the rules, scalars replicated.

  An optimizer moment's path ends with its parameter's path (e.g.
  '1/0/mu/layers/0/mlp/up_proj/kernel'), so the same `$`-anchored rules apply.
  """
  rep = NamedSharding(mesh, P())

  def one(path, leaf):
    if not getattr(leaf, "shape", ()):
      return rep
    return NamedSharding(mesh, parallel.spec_for(parallel.path_str(path), leaf.shape, mesh, rules))

  return TrainState(
      step=rep, rng=rep, nonfinite_steps=rep,
      params=jax.tree_util.tree_map_with_path(one, abstract_state.params),
      opt_state=jax.tree_util.tree_map_with_path(one, abstract_state.opt_state))


def init_train_state(init_params: Callable[[jax.Array], Any], optimizer: optax.GradientTransformation,
                     key: jax.Array, mesh: Mesh, rules=parallel.DEFAULT_RULES,
                     params: Any = None) -> tuple[TrainState, TrainState]:
  """A TrainState created directly in its shardings, and those shardings.

  `params`, when given (e.g. imported from a checkpoint), are used instead of
  `init_params`; they are resharded if needed.
  """
  init_key, state_key = jax.random.split(key)

  def build(k, p):
    p = init_params(k) if p is None else p
    return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=optimizer.init(p),
                      rng=state_key, nonfinite_steps=jnp.zeros((), jnp.int32))

  shardings = state_shardings(jax.eval_shape(build, init_key, params), mesh, rules)
  state = jax.jit(build, out_shardings=shardings)(init_key, params)
  return state, shardings


# ----------------------------------------------------------------------------
# The step
# ----------------------------------------------------------------------------


def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _split_micro(batch, n: int):
  """[B, ...] leaves -> [n, B / n, ...], so that a scan walks the micro-batches."""
  def split(x):
    if x.shape[0] % n:
      raise ValueError(f"batch of {x.shape[0]} rows does not split into grad_accum_steps={n} micro-batches")
    return x.reshape(n, x.shape[0] // n, *x.shape[1:])
  return jax.tree.map(split, batch)


def grads_and_metrics(loss_fn: LossFn, params, batch, accum_steps: int):
  """Mean loss, gradients and aux over `accum_steps` equal micro-batches."""
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if accum_steps == 1:
    (loss, aux), grads = grad_fn(params, batch)
    return loss, grads, aux

  def micro(carry, micro_batch):
    (loss, aux), grads = grad_fn(params, micro_batch)
    return jax.tree.map(jnp.add, carry, (loss, grads, aux)), None

  first = jax.tree.map(lambda x: x[0], _split_micro(batch, accum_steps))
  zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(lambda: grad_fn(params, first)))
  zeros = (zeros[0][0], zeros[1], zeros[0][1])
  total, _ = jax.lax.scan(micro, zeros, _split_micro(batch, accum_steps))
  return jax.tree.map(lambda x: x / accum_steps, total)


def train_step(state: TrainState, batch, *, loss_fn: LossFn, optimizer: optax.GradientTransformation,
               accum_steps: int = 1) -> tuple[TrainState, dict[str, jax.Array]]:
  """One update. A non-finite loss or gradient leaves params and optimizer state untouched."""
  rng, _ = jax.random.split(state.rng)
  loss, grads, aux = grads_and_metrics(loss_fn, state.params, batch, accum_steps)
  finite = jnp.isfinite(loss) & _all_finite(grads)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
  new_state = TrainState(
      step=state.step + 1, params=keep(params, state.params), opt_state=keep(opt_state, state.opt_state),
      rng=rng, nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32))
  metrics = dict(aux, loss=loss, grad_norm=optax.tree.norm(grads), nonfinite=(~finite).astype(jnp.float32))
  return new_state, metrics


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, shardings: TrainState,
                    mesh: Mesh, accum_steps: int = 1, frozen: Any = None,
                    combine: Callable[[Any, Any], Any] | None = None):
  """`step(state, batch) -> (state, metrics)`, jitted over the mesh with the state donated.

  Batch leaves are split over the data-parallel axes on their leading dim;
  metrics come back replicated. `frozen` (with `combine`): parameters that
  are read but not trained (LoRA's base), passed to every step in their own
  shardings and never donated; the loss sees `combine(frozen, state.params)`.
  """
  def batch_shardings(batch):
    return jax.tree.map(lambda x: parallel.batch_sharding(mesh, max(1, x.ndim)), batch)

  def step(state, batch, frozen_params):
    fn = loss_fn if frozen_params is None else (lambda p, b: loss_fn(combine(frozen_params, p), b))
    return train_step(state, batch, loss_fn=fn, optimizer=optimizer, accum_steps=accum_steps)

  frozen_shardings = None if frozen is None else jax.tree.map(lambda x: x.sharding, frozen)
  compiled = {}

  def run(state, batch):
    key = jax.tree.structure(batch), tuple((x.shape, str(x.dtype)) for x in jax.tree.leaves(batch))
    if key not in compiled:
      compiled[key] = jax.jit(step, in_shardings=(shardings, batch_shardings(batch), frozen_shardings),
                              out_shardings=(shardings, NamedSharding(mesh, P())), donate_argnums=0)
    with jax.set_mesh(mesh):
      return compiled[key](state, batch, frozen)

  return run
