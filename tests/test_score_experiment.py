"""The main job end to end on a shrunken config: outputs, resume, and SIGKILL recovery."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

TINY = ["--config=configs/arith_score.py:smoke", "--config.base.steps=12", "--config.stage1.steps=4",
        "--config.stage2.steps=4", "--config.task.eval_size=16", "--config.eval.batch_size=16",
        "--config.eval.every=4", "--config.eval.interval_problems=8", "--config.checkpoint.every=2",
        "--config.log_every=2", "--config.checkpoint.async_save=False"]
KEYS = ("acc_t1", "acc_t2", "delta", "delta_i2c", "delta_c2i")


def _env():
  return dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")


def _main(workdir, *extra, **kw):
  return subprocess.run([sys.executable, "-m", "scorejax.main", *TINY, f"--workdir={workdir}", *extra],
                        capture_output=True, text=True, env=_env(), timeout=600, **kw)


def _results(workdir):
  with open(os.path.join(workdir, "eval.json")) as f:
    return {name: {k: v for k, v in table.items() if k in KEYS} for name, table in json.load(f).items()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  proc = _main(workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, proc


def test_main_writes_every_output(finished_run):
  workdir, proc = finished_run
  results = _results(workdir)
  full = json.loads((workdir / "eval.json").read_text())
  assert set(results) == {"base", "stage1", "stage1_best", "stage2", "stage2_best"}
  assert full["stage1"]["checkpoint_step"] == 4 and full["stage1_best"]["checkpoint_step"] in (2, 4)
  for name, table in results.items():
    assert set(table) == set(KEYS)
    for attempt in ("y1", "y2"):  # what each attempt's carrying lines did
      carry = full[name][f"lines_{attempt}"]["carry"]
      assert carry["right"] + carry["dropped"] + carry["other"] == pytest.approx(1.0 if carry["lines"] else 0.0)
    assert table["delta"] == pytest.approx(table["acc_t2"] - table["acc_t1"])
    assert table["delta"] == pytest.approx(table["delta_i2c"] - table["delta_c2i"])
  records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  phases = {r["phase"] for r in records}
  assert phases == {"base", "stage1", "stage2"}
  rl = [r for r in records if r["phase"] == "stage2" and "loss" in r]
  assert rl and all("reward_y1" in r and "reward_y2" in r and "kl_y1" in r for r in rl)
  dev = [r for r in records if "dev_delta" in r]  # interval evaluations, on training-split problems
  assert {r["phase"] for r in dev} == {"base", "stage1", "stage2"}
  assert [r["step"] for r in dev if r["phase"] == "base"] == [12]  # once, where the RL curves start
  assert all(set(r) >= {f"dev_{k}" for k in KEYS} | {"dev_carry_right_y2"} for r in dev)
  assert (workdir / "curves.png").stat().st_size > 1000
  assert any(f.startswith("events") for f in os.listdir(workdir / "tensorboard"))
  for phase in ("base", "stage1", "stage2"):
    assert os.listdir(workdir / "checkpoints" / phase)
  assert "acc_t1" in proc.stdout and "stage2" in proc.stdout  # the final table
  inference = json.loads((workdir / "inference.json").read_text())
  assert set(inference) == {"base", "stage2"}
  for name, r in inference.items():
    # the same greedy attempts as the evaluation's (one cache, the instruction after each), then a third
    assert r["attempts"]["acc_at"][:2] == [full[name]["acc_t1"], full[name]["acc_t2"]]
    assert len(r["attempts"]["acc_at"]) == 3 and len(r["attempts"]["c2i"]) == 2
    assert r["attempts"]["c2i"][0] == pytest.approx(full[name]["delta_c2i"])
    assert [row["episodes"] for row in r["scaling"]] == [1, 2]
    for row in r["scaling"]:  # the parallel peer's tokens within half a sample of the episodes', or capped
      per_sample = row["parallel_tokens"] / row["parallel_k"]
      assert row["parallel_capped"] or abs(row["parallel_tokens"] - row["tokens"]) <= per_sample / 2 + 1e-9


def test_rerun_of_a_finished_run_changes_nothing(finished_run):
  workdir, _ = finished_run
  before = _results(workdir)
  lines = open(workdir / "metrics.jsonl").read()
  proc = _main(workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert _results(workdir) == before
  assert open(workdir / "metrics.jsonl").read() == lines


def test_sigkill_then_rerun_ends_with_the_same_metrics(finished_run, tmp_path):
  reference, _ = finished_run
  proc = subprocess.Popen([sys.executable, "-m", "scorejax.main", *TINY, f"--workdir={tmp_path}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
  marker = tmp_path / "checkpoints" / "stage1"
  deadline = time.time() + 300
  while time.time() < deadline and not (marker.exists() and any(d.isdigit() for d in os.listdir(marker))):
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (tmp_path / "eval.json").exists() or "stage2" not in _results(tmp_path)
  rerun = _main(tmp_path)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert _results(tmp_path) == _results(reference)


def test_dev_problems_are_fixed_and_never_drawn_for_training_or_eval():
  from scorejax.tasks import arith
  from scorejax.tasks.base import make_task
  task = make_task(_arith_config().task)
  dev = task.dev_problems(40)
  assert [p.key for p in dev] == [p.key for p in task.dev_problems(40)] and len({p.key for p in dev}) == 40
  assert {arith.split_of(p, task.arith) for p in dev} == {"dev"}
  trained = {p.key for step in range(50) for p in task.train_problems(0, "base", step, 32)}
  assert not {p.key for p in dev} & (trained | {p.key for p in task.eval_problems})
  no_dev = _arith_config()
  no_dev.task.difficulty.dev_fraction = 0.0
  with pytest.raises(ValueError, match="dev_fraction"):
    make_task(no_dev.task).dev_problems(4)


def test_unknown_config_key_fails_before_compute(tmp_path):
  proc = _main(tmp_path, "--config.stage2.alhpa=3")
  assert proc.returncode != 0 and "alhpa" in proc.stderr
  assert not (tmp_path / "checkpoints").exists()


def test_a_base_first_attempt_share_outside_0_1_fails_before_compute(tmp_path):
  proc = _main(tmp_path, "--config.stage2.base_first_attempts=1.0")
  assert proc.returncode != 0 and "config.stage2.base_first_attempts=1.0" in proc.stderr
  assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("overrides", [{}, {"stage1.steps": 50, "stage2.batch_size": 32}])
def test_every_variant_trains_with_scores_budget(overrides):
  from hf_fixtures import config_module, config_with

  from scorejax.experiments import score
  # --config.KEY=VALUE overrides apply after the variant, as main applies them
  reference = score.training_phases(config_with("arith_score.py", "", overrides))
  budget = lambda slots: (sum(s["steps"] for s in slots), sum(s["episodes"] for s in slots))
  assert [s["method"] for s in reference] == ["score_stage1", "score_stage2"]
  for variant in config_module("arith_score.py").VARIANTS:
    slots = score.training_phases(config_with("arith_score.py", variant, overrides))
    methods = {s["method"] for s in slots}
    if variant == "self_refine":  # prompting only
      assert budget(slots) == (0, 0)
      continue
    if variant in ("star", "star_i2c", "pair_sft", "single_turn", "no_stage1"):  # no SCoRe Stage I comes back
      assert "score_stage1" not in methods and len(methods) == 1, (variant, slots)
    steps, episodes = budget(slots)
    assert steps == budget(reference)[0], variant  # the same gradient steps, slot by slot
    assert [s["steps"] for s in slots] == [s["steps"] for s in reference], variant
    # the same sampled episodes (Pair-SFT samples none: the task writes its pairs, as many rows per step)
    assert episodes == (0 if variant == "pair_sft" else budget(reference)[1]), variant


def _arith_config(*overrides):
  """configs/arith_score.py:smoke with (dotted key, value) overrides."""
  from hf_fixtures import config_with
  return config_with("arith_score.py", "smoke", dict(overrides))


def _attempt_rewards(task, config, step, attempt):
  """r(y) of each row's attempt in the base SFT batch of `step`, read back from its tokens."""
  from scorejax.experiments import score
  batch = score.base_sft_batch(task, config, step)
  problems = task.train_problems(config.seed, "base", step, config.base.batch_size)
  tokens, mask = batch["tokens_BxT"], batch[f"mask_{attempt}_BxT"].astype(bool)
  return [task.reward(p, tokens[i][mask[i]].tolist()) for i, p in enumerate(problems)]


def test_base_batches_are_clean_before_clean_steps_and_noisy_after():
  from scorejax.tasks.base import make_task
  config = _arith_config(("base.clean_steps", 3), ("base.clean_error_rate", 0.0), ("base.first_error_rate", 0.0),
                         ("base.second_error_rate", 1.0), ("base.carry_slip_rate", 0.0),
                         ("base.second_carry_slip_rate", 0.0))
  task = make_task(config.task)
  for step in range(3):
    assert _attempt_rewards(task, config, step, "y1") == [1.0] * config.base.batch_size
    assert _attempt_rewards(task, config, step, "y2") == [1.0] * config.base.batch_size
  assert _attempt_rewards(task, config, 3, "y1") == [1.0] * config.base.batch_size  # rate 0
  assert sum(_attempt_rewards(task, config, 3, "y2")) < config.base.batch_size / 2  # rate 1: answers mostly wrong


def test_each_attempt_has_its_own_carry_habit():
  from scorejax.experiments import score
  from scorejax.tasks import arith
  from scorejax.tasks.base import make_task
  config = _arith_config(("base.clean_steps", 0), ("base.first_error_rate", 0.0), ("base.second_error_rate", 0.0),
                         ("base.carry_slip_rate", 0.0), ("base.second_carry_slip_rate", 1.0))
  task = make_task(config.task)
  problems = task.train_problems(config.seed, "base", 0, config.base.batch_size)
  carries = [any(arith.carry_slip(op, v, n) for v, (op, n) in zip(p.values, p.ops)) for p in problems]
  assert 0 < sum(carries) < len(carries)
  batch = score.base_sft_batch(task, config, 0)
  right = [arith.format_solution(arith.solution_lines(p)) for p in problems]
  for attempt, wrong in (("y1", [False] * len(problems)), ("y2", carries)):  # habit 1.0: every carry dropped
    mask = batch[f"mask_{attempt}_BxT"]
    written = [task.text(batch["tokens_BxT"][i][mask[i]].tolist()) for i in range(len(problems))]
    assert [w != r for w, r in zip(written, right)] == wrong


def test_a_habit_of_carries_only_keeps_every_borrow():
  from scorejax.experiments import score
  from scorejax.tasks import arith
  from scorejax.tasks.base import make_task
  config = _arith_config(("base.clean_steps", 0), ("base.first_error_rate", 0.0), ("base.second_error_rate", 0.0),
                         ("base.carry_slip_rate", 1.0), ("base.second_carry_slip_rate", 1.0),
                         ("base.second_habit_ops", "+"), ("base.batch_size", 64))
  task = make_task(config.task)
  batch = score.base_sft_batch(task, config, 0)
  for attempt, dropped_ops in (("y1", {"+", "-"}), ("y2", {"+"})):
    mask = batch[f"mask_{attempt}_BxT"]
    steps = [arith.parse_line(line) for i in range(len(mask))
             for line in arith.split_lines(task.text(batch["tokens_BxT"][i][mask[i]].tolist()))]
    steps = [s for s in steps if isinstance(s, arith.Step) and arith.carry_slip(s.op, s.left, s.right)]
    for op in "+-":  # every carrying step of the habit's operations is dropped, every other one is right
      results = {s.result - arith.apply_op(s.op, s.left, s.right) for s in steps if s.op == op}
      dropped = {"+": {-10}, "-": {10}}[op]  # 4+8=2, 12-3=19
      assert results == (dropped if op in dropped_ops else {0}), (attempt, op)


def test_clean_steps_write_two_independent_attempts_without_the_habit():
  from scorejax.tasks.base import make_task
  config = _arith_config(("base.clean_steps", 3), ("base.clean_error_rate", 0.5), ("base.carry_slip_rate", 1.0),
                         ("base.batch_size", 64))
  task = make_task(config.task)
  r1 = sum((_attempt_rewards(task, config, step, "y1") for step in range(3)), [])
  r2 = sum((_attempt_rewards(task, config, step, "y2") for step in range(3)), [])
  n = len(r1)
  # Each attempt is wrong about half the time (habit 1.0 would make every carrying problem wrong), and the
  # two attempts' outcomes are independent: all four combinations occur about as often as chance says.
  assert 0.3 * n < n - sum(r1) < 0.7 * n and 0.3 * n < n - sum(r2) < 0.7 * n
  for a, b in ((1.0, 1.0), (1.0, 0.0), (0.0, 1.0), (0.0, 0.0)):
    assert 0.1 * n < sum(x == a and y == b for x, y in zip(r1, r2)) < 0.4 * n


def test_stage2_mix_takes_first_attempts_from_the_base_model_and_trains_only_its_own():
  import jax

  from scorejax import parallel
  from scorejax.experiments import score
  from scorejax.sampling import Greedy
  from scorejax.tasks.base import make_task
  config = _arith_config()
  task = make_task(config.task)
  mesh = parallel.make_mesh(dict(config.mesh))
  lm, _ = score.build_model(config.model, task.tokenizer, mesh, config.seed)
  # Scaled-up random weights: peaked logits, so greedy text depends on the weights.
  policy, base = (jax.tree.map(lambda w: 30 * w, lm.init(jax.random.key(i))) for i in (0, 1))
  problems = task.train_problems(0, "stage2", 0, 6)
  sampler, key = score.sampler_config(config, task), jax.random.key(2)

  def first(params, rows):
    return score.first_attempts(lm, params, task, rows, key, Greedy(), sampler, mesh)

  ep = score.policy_episodes(lm, policy, base, task, problems, key, Greedy(), sampler, mesh, n_base=4)
  assert first(base, problems[:4]) != first(policy, problems[:4])  # the two models write different y1
  assert ep.y1[:4] == first(base, problems[:4]) and ep.y1[4:] == first(policy, problems[4:])
  own = score.two_attempts(lm, policy, task, problems[4:], key, Greedy(), sampler, mesh)
  assert ep.y2[4:] == own.y2  # y2 continues the policy's own y1 as in an unmixed episode
  assert ep.y1_on_policy.tolist() == [False] * 4 + [True] * 2
  batch = score.episode_batch(task, ep)
  assert not batch["mask_y1_BxT"][:4].any()
  assert batch["mask_y1_BxT"][4:].sum(1).tolist() == [len(y) for y in ep.y1[4:]]
  assert batch["mask_y2_BxT"].sum(1).tolist() == [len(y) for y in ep.y2]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_the_sampler_logprobs_are_the_trained_logprobs_of_the_packed_episode(temperature):
  """y1 and y2 as the sampler drew them (y2 decoded from y1's cache) and as the loss reads them back
  from the packed [x, y1, p, y2] batch under its masks, at the rollouts' temperature."""
  import dataclasses

  import jax
  import numpy as np

  from scorejax import parallel
  from scorejax.experiments import score
  from scorejax.objectives.loss import model_logprobs
  from scorejax.rollouts import first_turn, next_turn
  from scorejax.sampling import Sample
  from scorejax.tasks.base import make_task
  config = _arith_config()
  task = make_task(config.task)
  mesh = parallel.make_mesh(dict(config.mesh))
  lm, params = score.build_model(config.model, task.tokenizer, mesh, config.seed)
  problems = task.train_problems(0, "stage1", 0, 8)
  prompts = [task.prompt_ids(p) for p in problems]
  # Digits stop a turn too: the untrained model's rows end early, at many lengths, in both attempts.
  stops = (*task.stop_ids, *task.tokenizer.encode("1357"))
  sampler = dataclasses.replace(score.sampler_config(config, task), max_new_tokens=10, stop_tokens=stops,
                                sampling_logprobs=True)
  rule, pad = Sample(temperature=temperature), task.tokenizer.pad_id
  cache = score.episode_cache_length(task, prompts, sampler)
  t1 = first_turn(lm, params, prompts, jax.random.key(1), rule, sampler, mesh, pad_id=pad, cache_length=cache)
  t2 = next_turn(lm, params, t1, [task.instruction_ids] * len(prompts), jax.random.key(2), rule, sampler, mesh,
                 pad_id=pad)
  lengths = [len(y) for y in t1.ids + t2.ids]
  assert min(lengths) < 10 and len(set(lengths)) > 2  # early stops, of several lengths
  zeros = np.zeros(len(problems), np.float32)
  batch = score.episode_batch(task, score.Episodes(problems, prompts, t1.ids, t2.ids, zeros, zeros,
                                                   np.ones(len(problems), bool)))
  with jax.set_mesh(mesh):
    trained = np.asarray(jax.jit(model_logprobs(lm, config.logprob_chunk, temperature=temperature))(params, batch))
  for turn, mask in ((t1, batch["mask_y1_BxT"]), (t2, batch["mask_y2_BxT"])):
    drawn = np.asarray(turn.rollout.sampling_logprobs_BxN)
    for i, ids in enumerate(turn.ids):
      assert mask[i].sum() == len(ids)
      np.testing.assert_allclose(trained[i][mask[i]], drawn[i, :len(ids)], atol=2e-5, rtol=1e-5)
