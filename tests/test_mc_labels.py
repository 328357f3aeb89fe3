"""Monte Carlo step labels: the rule by hand, and the in-JAX driver on a tiny model."""

import jax
import ml_collections

from scorejax.models import LM, tiny_arith
from scorejax.rewards import mc_labels
from scorejax.tasks import arith
from scorejax.tasks.arith.task import ArithTask
from scorejax.tasks.base import StepTask


def test_the_first_prefix_that_never_reaches_the_answer_is_the_label():
  assert mc_labels.label_from_successes([3, 1, 0, 0], complete=True) == 2
  assert mc_labels.label_from_successes([8, 8, 8], complete=True) == -1
  assert mc_labels.label_from_successes([0, 5], complete=True) == 0
  # A solution that never gives an answer is not "all correct": it gets no label at all.
  assert mc_labels.label_from_successes([8, 8], complete=False) is None


def _task():
  c = ml_collections.ConfigDict(dict(
      name="arith", phrasing="symbols", eval_size=4, eval_seed=0, dev_seed=0,
      difficulty=dict(min_steps=2, max_steps=2, max_start=9, max_add=9, max_mul=2, max_value=20, ops="+-",
                      dev_fraction=0.1)))
  return ArithTask(c)


def test_the_driver_counts_completions_and_scores_the_whole_solution_itself():
  task = _task()
  assert isinstance(task, StepTask)
  lm = LM.from_config(tiny_arith(task.tokenizer.vocab_size, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1,
                                 head_dim=16, d_ff=64, eos_token_id=task.tokenizer.eos_id))
  params = lm.init(jax.random.key(0))
  problem = task.eval_problems[0]
  right = arith.solution_lines(problem)
  wrong_answer = right[:-1] + (arith.answer_line(problem.answer + 1),)
  items = [mc_labels.LabelItem(problem, right), mc_labels.LabelItem(problem, wrong_answer)]
  config = mc_labels.MCConfig(rollouts=3, max_new_tokens=8, batch_size=4)
  counts = mc_labels.prefix_successes(lm, params, task, items, config, jax.random.key(0), None)
  assert [len(c) for c in counts] == [3, 3]  # one count per step prefix
  assert all(0 <= h <= 3 for c in counts for h in c)
  # The last prefix is the solution: N when its answer is right, 0 when not, without sampling.
  assert counts[0][-1] == 3 and counts[1][-1] == 0
  labels = mc_labels.mc_labels(lm, params, task, items, config, jax.random.key(0), None)
  assert labels[1] in (0, 1, 2) and labels[0] in (-1, 0, 1)  # a wrong answer is never -1
  # An untrained model's completions rarely reach the answer, so early prefixes often count 0:
  # the labels follow the rule on the counts either way.
  assert labels == [mc_labels.label_from_successes(c, True) for c in counts]
