"""The decoder against transformers, its cache path, remat, dtypes and HF import/export."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hf_fixtures import build_hf_model, hf_logits, padded_batch
from scorejax.models import LM, ModelConfig, hf, tiny_arith, transformer

FAMILIES = ["llama", "qwen2", "qwen3", "gemma2", "gemma3"]


@pytest.fixture(scope="module", params=FAMILIES)
def family_ckpt(request, tmp_path_factory):
  path = tmp_path_factory.mktemp(request.param)
  model = build_hf_model(request.param)
  model.save_pretrained(path)
  return request.param, model, str(path)


def test_logits_match_transformers_on_padded_batch(family_ckpt):
  _, model, path = family_ckpt
  lm, params = hf.load_hf(path)
  tokens, positions, mask = padded_batch(lm.config.vocab_size)
  ours, _ = jax.jit(lm.apply)(params, tokens, positions, mask)
  diff = np.abs(np.asarray(ours) - hf_logits(model, tokens, positions, mask))[mask].max()
  assert diff <= 1e-4, diff


def test_export_then_transformers_load_gives_same_logits(family_ckpt, tmp_path):
  import transformers
  family, model, path = family_ckpt
  lm, params = hf.load_hf(path)
  hf.save_hf(lm, params, str(tmp_path))
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
  assert type(reloaded) is type(model)
  tokens, positions, mask = padded_batch(lm.config.vocab_size, seed=1)
  diff = np.abs(hf_logits(reloaded, tokens, positions, mask) - hf_logits(model, tokens, positions, mask))
  assert diff[mask].max() <= 1e-5
  # and our own import of the export is the same config and the same tensors
  lm2, params2 = hf.load_hf(str(tmp_path))
  assert lm2.config == lm.config
  jax.tree.map(np.testing.assert_array_equal, params, params2)


def test_index_sharded_export_round_trips(family_ckpt, tmp_path):
  _, _, path = family_ckpt
  lm, params = hf.load_hf(path)
  hf.save_hf(lm, params, str(tmp_path), max_shard_bytes=20_000)
  files = sorted(f for f in os.listdir(tmp_path) if f.endswith(".safetensors"))
  assert len(files) > 2 and os.path.exists(tmp_path / "model.safetensors.index.json")
  _, params2 = hf.load_hf(str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, params, params2)


def _cached_forward(lm, params, tokens, positions, mask, split):
  """Prefill the first `split` tokens into a cache, then feed the rest one at a time."""
  cache = lm.init_cache(tokens.shape[0], tokens.shape[1] + 3)
  logits, cache = lm.apply(params, tokens[:, :split], positions[:, :split], mask[:, :split], cache)
  chunks = [logits]
  for t in range(split, tokens.shape[1]):
    logits, cache = lm.apply(params, tokens[:, t:t + 1], positions[:, t:t + 1], mask[:, t:t + 1], cache)
    chunks.append(logits)
  return np.concatenate([np.asarray(c) for c in chunks], axis=1), cache


def test_kv_cache_decoding_equals_full_forward(family_ckpt):
  _, _, path = family_ckpt
  lm, params = hf.load_hf(path)
  tokens, positions, mask = padded_batch(lm.config.vocab_size)
  full, _ = lm.apply(params, tokens, positions, mask)
  cached, cache = _cached_forward(lm, params, tokens, positions, mask, split=8)
  assert int(cache.end) == tokens.shape[1]
  np.testing.assert_array_equal(np.asarray(cache.valid_BxS)[:, :12], mask)
  assert np.abs(cached - np.asarray(full))[mask].max() <= 1e-5


def test_gap_of_invalid_slots_is_ignored():
  """A row that stopped early leaves invalid slots mid-cache; later tokens must not see them."""
  lm = LM.from_config(tiny_arith(30, n_layers=2))
  params = lm.init(jax.random.key(0))
  tokens = jnp.array([[5, 6, 7, 8, 9]], jnp.int32)
  mask = jnp.array([[True, True, False, False, True]])
  positions = jnp.array([[0, 1, 2, 2, 2]], jnp.int32)  # the gap consumes no positions
  with_gap, _ = lm.apply(params, tokens, positions, mask, lm.init_cache(1, 8))
  packed = jnp.array([[5, 6, 9]], jnp.int32)
  without, _ = lm.apply(params, packed, jnp.array([[0, 1, 2]]), jnp.ones((1, 3), bool))
  np.testing.assert_allclose(with_gap[0, -1], without[0, -1], atol=1e-5)
  # Without the mask the garbage tokens 7, 8 would change the last logits.
  leaked, _ = lm.apply(params, tokens, positions, jnp.ones((1, 5), bool), lm.init_cache(1, 8))
  assert np.abs(np.asarray(leaked[0, -1] - without[0, -1])).max() > 1e-3


def test_remat_gives_identical_gradients():
  config = tiny_arith(30, n_layers=2)
  tokens = jax.random.randint(jax.random.key(1), (2, 9), 0, 30)
  positions = jnp.broadcast_to(jnp.arange(9), (2, 9))
  mask = jnp.ones((2, 9), bool)

  def grads(cfg):
    lm = LM.from_config(cfg)
    params = lm.init(jax.random.key(0))
    loss = lambda p: jnp.mean(lm.apply(p, tokens, positions, mask)[0] ** 2)
    return jax.jit(jax.grad(loss))(params)

  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               grads(config), grads(config.replace(remat=True)))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_projection_gradients_equal_autodiffs_of_a_plain_dot(dtype):
  """`project` only reorders the weight-gradient matmul: both its gradients equal jnp.dot's, in x's dtype."""
  x_BxTxI = jax.random.normal(jax.random.key(0), (3, 5, 8)).astype(dtype)
  w_IxO = jax.random.normal(jax.random.key(1), (8, 6)).astype(dtype)
  cotangent = jax.random.normal(jax.random.key(2), (3, 5, 6)).astype(dtype)
  ours = jax.vjp(transformer.project, x_BxTxI, w_IxO)
  plain = jax.vjp(jnp.dot, x_BxTxI, w_IxO)
  np.testing.assert_array_equal(ours[0], plain[0])
  tol = 1e-6 if dtype == "float32" else 2e-2
  for got, want in zip(ours[1](cotangent), plain[1](cotangent)):
    assert got.dtype == want.dtype == jnp.dtype(dtype) and got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=tol, atol=tol)


def test_bf16_compute_gives_fp32_logits_close_to_fp32():
  config = tiny_arith(30, n_layers=2)
  tokens = jax.random.randint(jax.random.key(1), (2, 9), 0, 30)
  positions = jnp.broadcast_to(jnp.arange(9), (2, 9))
  mask = jnp.ones((2, 9), bool)
  params = LM.from_config(config).init(jax.random.key(0))
  ref, _ = LM.from_config(config).apply(params, tokens, positions, mask)
  lm16 = LM.from_config(config.replace(param_dtype="bfloat16", dtype="bfloat16"))
  params16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(lm16.abstract_params()))
  out, _ = lm16.apply(params16, tokens, positions, mask)
  assert out.dtype == jnp.float32
  assert np.abs(np.asarray(out - ref)).max() < 0.05


def test_tiny_arith_preset_builds_from_config_alone():
  config = tiny_arith(48)
  lm = LM.from_config(config)
  params = lm.init(jax.random.key(0))
  n = sum(x.size for x in jax.tree.leaves(params))
  assert n == config.num_params()
  assert "lm_head" not in params  # tied


def test_num_params_counts_untied_and_biases():
  config = ModelConfig(family="qwen2", vocab_size=10, d_model=8, n_layers=1, n_heads=2, n_kv_heads=1,
                       head_dim=4, d_ff=16, qkv_bias=True)
  n = sum(x.size for x in jax.tree.leaves(LM.from_config(config).init(jax.random.key(0))))
  # embed 80 + head 80 + q 64+8 + k,v 2*(32+4) + o 64 + mlp 3*128 + norms 8*3
  assert n == config.num_params() == 80 + 80 + 72 + 72 + 64 + 384 + 24


def test_num_params_counts_each_familys_parameters_as_transformers_does(family_ckpt):
  _, model, path = family_ckpt
  config = hf.config_from_hf(json.loads(open(os.path.join(path, "config.json")).read()))
  assert config.num_params() == sum(p.numel() for p in model.parameters())  # qwen3: its q/k norms too


def test_qk_norm_belongs_to_qwen3_alone():
  kw = dict(vocab_size=10, d_model=8, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=4, d_ff=16)
  with pytest.raises(ValueError, match="qk_norm=False with family='qwen3'"):
    ModelConfig(family="qwen3", **kw)
  with pytest.raises(ValueError, match="qk_norm=True with family='llama'"):
    ModelConfig(family="llama", qk_norm=True, **kw)


# ----------------------------------------------------------------------------
# Import errors name the tensor / file and what was expected
# ----------------------------------------------------------------------------


def _copy_ckpt(src, dst):
  for name in os.listdir(src):
    with open(os.path.join(src, name), "rb") as f, open(os.path.join(dst, name), "wb") as g:
      g.write(f.read())


def test_unsupported_architecture_is_named(family_ckpt, tmp_path):
  _, _, path = family_ckpt
  _copy_ckpt(path, tmp_path)
  cfg = json.loads((tmp_path / "config.json").read_text())
  cfg.update(architectures=["MistralForCausalLM"], model_type="mistral")
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ValueError, match=r"config.json: unsupported architecture \['MistralForCausalLM'\]"):
    hf.load_hf(str(tmp_path))


def _rewrite_tensors(src, dst, edit):
  from safetensors.numpy import load_file, save_file
  _copy_ckpt(src, dst)
  tensors = load_file(os.path.join(src, "model.safetensors"))
  save_file(edit(tensors), os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})


def test_missing_tensor_is_named(family_ckpt, tmp_path):
  _, _, path = family_ckpt
  name = "model.layers.1.mlp.up_proj.weight"
  _rewrite_tensors(path, tmp_path, lambda t: {k: v for k, v in t.items() if k != name})
  with pytest.raises(KeyError, match=r"model.layers.1.mlp.up_proj.weight .*layers/1/mlp/up_proj/kernel.*missing"):
    hf.load_hf(str(tmp_path))


def test_wrong_shape_names_tensor_expected_and_actual(family_ckpt, tmp_path):
  _, model, path = family_ckpt
  name = "model.layers.0.self_attn.k_proj.weight"
  _rewrite_tensors(path, tmp_path, lambda t: {**t, name: t[name][:-1]})
  d, c = model.config.hidden_size, model.config
  k = c.num_key_value_heads * (getattr(c, "head_dim", None) or d // c.num_attention_heads)
  with pytest.raises(ValueError, match=rf"{name} has shape \({k - 1}, {d}\), expected \({k}, {d}\)"):
    hf.load_hf(str(tmp_path))


def test_missing_directory_contents_are_reported(tmp_path):
  with pytest.raises(FileNotFoundError, match="no config.json"):
    hf.load_hf(str(tmp_path))


# ----------------------------------------------------------------------------
# Gemma's config checks, and bf16 that keeps norms and softmax in fp32
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gemma2", "gemma3"])
def test_gemma_import_refuses_what_it_cannot_load(family):
  cfg = dict(build_hf_model(family).config.to_dict(), architectures=[hf._ARCH_OF_FAMILY[family]])
  with pytest.raises(ValueError, match=r"'Gemma3ForConditionalGeneration' is not supported: .*Gemma3ForCausalLM"):
    hf.config_from_hf(dict(cfg, architectures=["Gemma3ForConditionalGeneration"]))
  with pytest.raises(ValueError, match=r"hidden_activation='silu' is not supported for gemma.; expected gelu_pytorch"):
    hf.config_from_hf(dict(cfg, hidden_activation="silu"))
  config = hf.config_from_hf(cfg)
  with pytest.raises(ValueError, match="sandwich_norms=False with family='gemma"):
    config.replace(sandwich_norms=False)
  with pytest.raises(ValueError, match=f"layer_types has 1 entries for n_layers={config.n_layers}"):
    config.replace(layer_types=("full_attention",))
  with pytest.raises(ValueError, match="sliding_attention layers but sliding_window is not set"):
    config.replace(sliding_window=None)


def _primitives(jaxpr, names):
  """(primitive name, input dtypes) of every equation named in `names`, nested jaxprs included."""
  out = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in names:
      out.append((eqn.primitive.name, tuple(str(v.aval.dtype) for v in eqn.invars)))
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          out += _primitives(inner, names)
  return out


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_model_keeps_norms_and_attention_softmax_in_fp32(family):
  from scorejax.bench import bf16
  lm32, _ = bf16.random_model(family)
  lm = LM.from_config(lm32.config.replace(param_dtype="bfloat16", dtype="bfloat16"))
  tokens, positions, mask = padded_batch(lm.config.vocab_size)
  jaxpr = jax.make_jaxpr(lm.apply)(lm.abstract_params(), tokens, positions, mask).jaxpr
  found = _primitives(jaxpr, {"rsqrt", "exp"})
  norms = 1 + lm.config.n_layers * ((4 if lm.config.sandwich_norms else 2) + (2 if lm.config.qk_norm else 0))
  assert sum(name == "rsqrt" for name, _ in found) == norms  # every norm found
  assert sum(name == "exp" for name, _ in found) >= lm.config.n_layers  # every softmax found
  assert {dtypes for _, dtypes in found} == {("float32",)}, found  # a bf16 norm or softmax would show here
