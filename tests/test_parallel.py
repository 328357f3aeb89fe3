"""Sharded forward equals unsharded forward; bad meshes fail before any compute."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding

from hf_fixtures import padded_batch
from scorejax import parallel
from scorejax.models import LM, ModelConfig

CONFIG = ModelConfig(family="qwen2", vocab_size=64, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                     head_dim=16, d_ff=128, qkv_bias=True, tie_embeddings=False)
QWEN3 = CONFIG.replace(family="qwen3", qkv_bias=False, qk_norm=True)  # its per-head q/k norms sharded too
# Gemma 3's four norms per block, q/k norms, a sliding layer (window 5 < the 12-token rows) and a global one
GEMMA3 = CONFIG.replace(family="gemma3", qkv_bias=False, qk_norm=True, sandwich_norms=True, norm_offset=1.0,
                        scale_embeddings=True, mlp_activation="gelu_tanh", tie_embeddings=True, sliding_window=5,
                        layer_types=("sliding_attention", "full_attention"), rope_local_theta=10_000.0,
                        query_pre_attn_scalar=24.0, final_logit_softcap=5.0, attn_logit_softcap=0.05)


def _forward(lm, params, batch, mesh=None):
  if mesh is None:
    return np.asarray(jax.jit(lm.apply)(params, *batch)[0])
  with jax.set_mesh(mesh):
    return np.asarray(jax.jit(lm.apply)(params, *parallel.shard_batch(batch, mesh))[0])


@pytest.mark.parametrize("axes,config", [
    ({"data": 8}, CONFIG), ({"fsdp": 8}, CONFIG), ({"data": 2, "fsdp": 2, "tensor": 2}, CONFIG),
    ({"data": -1, "tensor": 2}, CONFIG), ({"data": 2, "fsdp": 2, "tensor": 2}, QWEN3),
    ({"data": 2, "fsdp": 2, "tensor": 2}, GEMMA3)])
def test_sharded_forward_equals_single_device(axes, config):
  lm = LM.from_config(config)
  ref_params = lm.init(jax.random.key(0))
  tokens, positions, mask = padded_batch(config.vocab_size)
  batch = tuple(np.concatenate([x] * 3)[:8] for x in (tokens, positions, mask))  # 8 rows
  expected = _forward(lm, ref_params, batch)

  mesh = parallel.make_mesh(axes)
  parallel.check_model_fits(config, mesh)
  shardings = parallel.param_shardings(lm.abstract_params(), mesh)
  params = jax.jit(lm.init, out_shardings=shardings)(jax.random.key(0))  # created sharded
  q = params["layers"][0]["self_attn"]["q_proj"]["kernel"]
  assert q.sharding == shardings["layers"][0]["self_attn"]["q_proj"]["kernel"]
  if axes.get("fsdp", 1) > 1 or axes.get("tensor", 1) > 1:
    assert len({s.data.shape for s in q.addressable_shards}) == 1
    assert q.addressable_shards[0].data.shape != q.shape  # really split, not replicated
  out = _forward(lm, params, batch, mesh)
  assert np.abs(out - expected)[batch[2]].max() <= 1e-5


def test_partition_rules_are_data():
  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  spec = lambda path, shape: parallel.spec_for(path, shape, mesh, parallel.DEFAULT_RULES)
  assert spec("layers/3/self_attn/q_proj/kernel", (64, 64)) == jax.sharding.PartitionSpec("fsdp", "tensor")
  assert spec("layers/0/mlp/down_proj/kernel", (128, 64)) == jax.sharding.PartitionSpec("tensor", "fsdp")
  # a vocabulary of 37 cannot be split in two: that dimension is replicated instead of padded
  assert spec("embed_tokens", (37, 64)) == jax.sharding.PartitionSpec(None, "fsdp")
  with pytest.raises(ValueError, match=r"no partition rule matches parameter 'extra/weight'"):
    spec("extra/weight", (3,))


def test_partition_rules_are_read_from_the_config():
  import ml_collections
  assert parallel.rules_from_config(ml_collections.ConfigDict({"partition_rules": ()})) is parallel.DEFAULT_RULES
  mine = ((r".*", (None, "tensor")),)
  config = ml_collections.ConfigDict({"partition_rules": mine})
  rules = parallel.rules_from_config(config)
  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  assert parallel.spec_for("layers/0/mlp/down_proj/kernel", (128, 64), mesh, rules) == jax.sharding.PartitionSpec(
      None, "tensor")  # the default rules would give ("tensor", "fsdp")
  with pytest.raises(ValueError, match=r"partition_rules\[0\] \('kernel\$'\) names mesh axes \['model'\]"):
    parallel.rules_from_config(ml_collections.ConfigDict({"partition_rules": ((r"kernel$", ("model",)),)}))
  with pytest.raises(ValueError, match=r"partition_rules\[0\]: '\(' is not a regular expression"):
    parallel.rules_from_config(ml_collections.ConfigDict({"partition_rules": ((r"(", (None,)),)}))


def test_mesh_sizes_resolve_and_bad_meshes_are_explained():
  assert parallel.mesh_shape({"data": -1, "tensor": 2}, 8) == {"data": 4, "fsdp": 1, "tensor": 2}
  with pytest.raises(ValueError, match="needs 6 devices but 8 are available"):
    parallel.make_mesh({"data": 3, "tensor": 2})
  with pytest.raises(ValueError, match="fixed axes multiply to 3, which does not divide the 8 devices"):
    parallel.make_mesh({"data": -1, "tensor": 3})
  with pytest.raises(ValueError, match="at most one axis may be -1"):
    parallel.make_mesh({"data": -1, "fsdp": -1})
  with pytest.raises(ValueError, match="unknown axes"):
    parallel.make_mesh({"model": 8})


def test_tensor_axis_must_divide_heads():
  mesh = parallel.make_mesh({"data": 1, "tensor": 8})
  with pytest.raises(ValueError, match="tensor=8 does not divide model n_heads=4"):
    parallel.check_model_fits(CONFIG, mesh)


def test_batch_not_divisible_by_data_parallel_size():
  mesh = parallel.make_mesh({"data": 8})
  with pytest.raises(ValueError, match="batch dimension 3 is not divisible by the data-parallel size 8"):
    parallel.shard_batch(np.zeros((3, 4)), mesh)


def test_initialize_distributed_is_a_no_op_on_one_host(monkeypatch):
  for k in ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "SLURM_NTASKS", "TPU_WORKER_HOSTNAMES"):
    monkeypatch.delenv(k, raising=False)
  parallel.initialize_distributed()
  assert not jax.distributed.is_initialized()


def test_hf_import_places_tensors_directly_into_shards(tmp_path):
  from hf_fixtures import build_hf_model, hf_logits
  from scorejax.models import hf
  model = build_hf_model("qwen2")
  model.save_pretrained(tmp_path)
  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  lm, params = hf.load_hf(str(tmp_path), mesh)
  k = params["layers"][1]["self_attn"]["k_proj"]["kernel"]
  assert isinstance(k.sharding, NamedSharding) and k.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  assert k.addressable_shards[0].data.shape == (32, 16)
  tokens, positions, mask = padded_batch(lm.config.vocab_size)
  batch = tuple(np.concatenate([x, x])[:4] for x in (tokens, positions, mask))
  out = _forward(lm, params, batch, mesh)
  assert np.abs(out - hf_logits(model, *batch))[batch[2]].max() <= 1e-4
