"""HF checkpoints: config.json + safetensors in, and back out.

Import reads each tensor slice straight from the memory-mapped safetensors
files into the device shards that hold it (`jax.make_array_from_callback`), so
no host ever gathers the whole model. Export writes config.json and
safetensors that `transformers` loads.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from typing import Any

import jax
import ml_dtypes
import numpy as np
from jax.sharding import Mesh, NamedSharding, SingleDeviceSharding

from scorejax import parallel
from scorejax.models.config import GEMMA, ModelConfig, RopeScaling
from scorejax.models.lm import LM, Params

ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3",
                 "Gemma2ForCausalLM": "gemma2", "Gemma3ForCausalLM": "gemma3"}
_ARCH_OF_FAMILY = {v: k for k, v in ARCHITECTURES.items()}
MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma2": "gemma2", "gemma3_text": "gemma3"}
_MODEL_TYPE_OF_FAMILY = {v: k for k, v in MODEL_TYPES.items()}
# HF activation names of the gated MLPs (Gemma's "gelu_pytorch_tanh" is gelu's tanh approximation)
_ACTIVATIONS = {"silu": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh"}
_MULTIMODAL = {"Gemma3ForConditionalGeneration": "Gemma 3's multimodal checkpoints (4B and up) hold the text model "
                                                  "under language_model; load a text-only Gemma3ForCausalLM"}

_ST_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(bool),
}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}


# ----------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------


def _rope_from_hf(hf: dict[str, Any], where: str) -> tuple[float, RopeScaling | None, float | None]:
  """(rope_theta, scaling, the sliding layers' own base or None) from the old `rope_scaling` or the new
  `rope_parameters` (Gemma 3's: one entry per layer type)."""
  params = hf.get("rope_parameters") or {}
  local_theta = None
  if "full_attention" in params or "sliding_attention" in params:  # Gemma 3
    local = params.get("sliding_attention") or {}
    if local.get("rope_type", "default") != "default":
      raise ValueError(f"{where}: a scaled RoPE on the sliding layers ({local}) is not supported")
    local_theta = float(local.get("rope_theta", hf.get("rope_local_base_freq", 10_000.0)))
    params = params.get("full_attention") or {}
  elif hf.get("rope_local_base_freq") is not None:
    local_theta = float(hf["rope_local_base_freq"])
  scaling = hf.get("rope_scaling") or params
  theta = float(params.get("rope_theta", hf.get("rope_theta", 10_000.0)))
  rope_type = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
  if rope_type == "default":
    return theta, None, local_theta
  if rope_type == "linear":
    return theta, RopeScaling(factor=float(scaling["factor"]), rope_type="linear"), local_theta
  if rope_type != "llama3":
    raise ValueError(f"{where}: rope type {rope_type!r} is not supported; expected 'default', 'llama3' or "
                     "'linear'")
  return theta, RopeScaling(
      factor=float(scaling["factor"]), low_freq_factor=float(scaling["low_freq_factor"]),
      high_freq_factor=float(scaling["high_freq_factor"]),
      original_max_position_embeddings=int(scaling["original_max_position_embeddings"])), local_theta


def _rope_to_hf(c: ModelConfig) -> dict[str, Any]:
  """`rope_parameters` of a ModelConfig (of the full-attention layers, for Gemma 3)."""
  rope: dict[str, Any] = {"rope_type": "default", "rope_theta": c.rope_theta}
  s = c.rope_scaling
  if s is not None and s.rope_type == "linear":
    rope = {"rope_type": "linear", "rope_theta": c.rope_theta, "factor": s.factor}
  elif s is not None:
    rope = {"rope_type": "llama3", "rope_theta": c.rope_theta, "factor": s.factor,
            "low_freq_factor": s.low_freq_factor, "high_freq_factor": s.high_freq_factor,
            "original_max_position_embeddings": s.original_max_position_embeddings}
  return rope


def _gemma_from_hf(hf: dict[str, Any], family: str, n_layers: int, where: str) -> dict[str, Any]:
  """The ModelConfig fields only Gemma 2 / 3 set."""
  pattern = 2 if family == "gemma2" else int(hf.get("sliding_window_pattern") or hf.get("_sliding_window_pattern")
                                              or 6)
  layer_types = hf.get("layer_types") or [
      "sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n_layers)]
  if hf.get("use_bidirectional_attention"):
    raise ValueError(f"{where}: use_bidirectional_attention=true (an encoder) is not supported")
  cap = lambda key: None if hf.get(key) is None else float(hf[key])
  return dict(scale_embeddings=True, norm_offset=1.0, sandwich_norms=True,
              query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar") or hf.get("head_dim") or 256),
              attn_logit_softcap=cap("attn_logit_softcapping"), final_logit_softcap=cap("final_logit_softcapping"),
              sliding_window=int(hf["sliding_window"]) if hf.get("sliding_window") else None,
              layer_types=tuple(layer_types))


def _ids(value):
  """A list of token ids becomes a tuple, so the config stays hashable."""
  return tuple(value) if isinstance(value, list) else value


def config_from_hf(hf: dict[str, Any], where: str = "config.json", **overrides) -> ModelConfig:
  """A ModelConfig from an HF config dict; `where` names the file in errors."""
  archs = hf.get("architectures") or []
  for arch in archs:
    if arch in _MULTIMODAL:
      raise ValueError(f"{where}: architecture {arch!r} is not supported: {_MULTIMODAL[arch]}")
  family = next((ARCHITECTURES[a] for a in archs if a in ARCHITECTURES), None)
  if family is None:
    family = MODEL_TYPES.get(hf.get("model_type", ""))
  if family is None:
    raise ValueError(f"{where}: unsupported architecture {archs or hf.get('model_type')!r}; "
                     f"supported: {sorted(ARCHITECTURES)}")
  gemma = family in GEMMA
  if hf.get("use_sliding_window") and not gemma:
    raise ValueError(f"{where}: use_sliding_window=true is not supported for {family}")
  act_key = "hidden_activation" if hf.get("hidden_activation") else "hidden_act"
  activation = _ACTIVATIONS.get(hf.get(act_key) or "silu")
  if activation != ("gelu_tanh" if gemma else "silu"):
    raise ValueError(f"{where}: {act_key}={hf.get(act_key)!r} is not supported for {family}; expected "
                     f"{'gelu_pytorch_tanh' if gemma else 'silu'}")
  theta, scaling, local_theta = _rope_from_hf(hf, where)
  n_heads = int(hf["num_attention_heads"])
  dtype = str(hf.get("dtype") or hf.get("torch_dtype") or "float32")
  kwargs = dict(
      family=family, vocab_size=int(hf["vocab_size"]), d_model=int(hf["hidden_size"]),
      n_layers=int(hf["num_hidden_layers"]), n_heads=n_heads,
      n_kv_heads=int(hf.get("num_key_value_heads") or n_heads),
      head_dim=int(hf.get("head_dim") or hf["hidden_size"] // n_heads),
      d_ff=int(hf["intermediate_size"]), rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      rope_theta=theta, rope_scaling=scaling,
      max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", gemma)),
      qkv_bias=family == "qwen2" or bool(hf.get("attention_bias", False)),
      attention_out_bias=family != "qwen2" and bool(hf.get("attention_bias", False)),
      qk_norm=family in ("qwen3", "gemma3"),
      mlp_bias=bool(hf.get("mlp_bias", False)), mlp_activation=activation,
      rope_local_theta=local_theta if family == "gemma3" else None,
      param_dtype=dtype if dtype in ("float32", "bfloat16", "float16") else "float32",
      initializer_range=float(hf.get("initializer_range", 0.02)),
      bos_token_id=hf.get("bos_token_id"), eos_token_id=_ids(hf.get("eos_token_id")))
  if gemma:
    kwargs.update(_gemma_from_hf(hf, family, kwargs["n_layers"], where))
  kwargs.update(overrides)
  return ModelConfig(**kwargs)


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
  """The HF config dict of a ModelConfig (loadable by transformers' Llama / Qwen2 / Qwen3 / Gemma 2 / Gemma 3
  classes)."""
  c = config
  rope = _rope_to_hf(c)
  if c.family in GEMMA:
    return _gemma_to_hf(c, rope)
  hf = {
      "architectures": [_ARCH_OF_FAMILY[c.family]], "model_type": c.family,
      "vocab_size": c.vocab_size, "hidden_size": c.d_model, "intermediate_size": c.d_ff,
      "num_hidden_layers": c.n_layers, "num_attention_heads": c.n_heads,
      "num_key_value_heads": c.n_kv_heads, "head_dim": c.head_dim, "hidden_act": "silu",
      "max_position_embeddings": c.max_position_embeddings, "rms_norm_eps": c.rms_norm_eps,
      "rope_theta": c.rope_theta, "rope_parameters": rope,
      "rope_scaling": None if c.rope_scaling is None else dict(rope),
      "tie_word_embeddings": c.tie_embeddings, "initializer_range": c.initializer_range,
      "dtype": c.param_dtype, "torch_dtype": c.param_dtype,
      "bos_token_id": c.bos_token_id,
      "eos_token_id": list(c.eos_token_id) if isinstance(c.eos_token_id, tuple) else c.eos_token_id,
  }
  if c.family == "qwen2":
    if not c.qkv_bias or c.attention_out_bias or c.mlp_bias:
      raise ValueError("a qwen2 checkpoint has biases on q/k/v only")
  else:  # llama, qwen3: one attention_bias covers q/k/v and o
    if c.qkv_bias != c.attention_out_bias:
      raise ValueError(f"a {c.family} checkpoint biases q/k/v and o together (attention_bias); "
                       f"got qkv_bias={c.qkv_bias}, attention_out_bias={c.attention_out_bias}")
    if c.family == "qwen3" and c.mlp_bias:
      raise ValueError("a qwen3 checkpoint has no MLP biases")
    hf["attention_bias"] = c.qkv_bias
  if c.family == "llama":
    hf["mlp_bias"] = c.mlp_bias
  else:  # the Qwen families: no sliding window
    hf.update(use_sliding_window=False, sliding_window=None)
  return hf


def _number(x: float) -> int | float:
  """An integral float as an int (transformers checks some fields' types strictly)."""
  return int(x) if float(x).is_integer() else x


def _gemma_to_hf(c: ModelConfig, rope: dict[str, Any]) -> dict[str, Any]:
  if c.qkv_bias or c.attention_out_bias or c.mlp_bias or c.mlp_activation != "gelu_tanh":
    raise ValueError(f"a {c.family} checkpoint has no biases and a gelu_pytorch_tanh MLP")
  if not (c.scale_embeddings and c.norm_offset == 1.0 and c.tie_embeddings):
    raise ValueError(f"a {c.family} checkpoint scales its tied embeddings and its norms by (1 + w)")
  layer_types = list(c.layer_types) or ["full_attention"] * c.n_layers
  if c.family == "gemma3":
    rope = {"full_attention": rope, "sliding_attention": {
        "rope_type": "default", "rope_theta": c.rope_theta if c.rope_local_theta is None else c.rope_local_theta}}
  return {
      "architectures": [_ARCH_OF_FAMILY[c.family]], "model_type": _MODEL_TYPE_OF_FAMILY[c.family],
      "vocab_size": c.vocab_size, "hidden_size": c.d_model, "intermediate_size": c.d_ff,
      "num_hidden_layers": c.n_layers, "num_attention_heads": c.n_heads, "num_key_value_heads": c.n_kv_heads,
      "head_dim": c.head_dim, "hidden_activation": "gelu_pytorch_tanh",
      "max_position_embeddings": c.max_position_embeddings, "rms_norm_eps": c.rms_norm_eps,
      "rope_parameters": rope, "attention_bias": False, "tie_word_embeddings": True,
      "query_pre_attn_scalar": _number(c.query_pre_attn_scalar or c.head_dim),
      "sliding_window": c.sliding_window or c.max_position_embeddings, "layer_types": layer_types,
      "final_logit_softcapping": c.final_logit_softcap, "attn_logit_softcapping": c.attn_logit_softcap,
      "initializer_range": c.initializer_range, "dtype": c.param_dtype, "torch_dtype": c.param_dtype,
      "bos_token_id": c.bos_token_id,
      "eos_token_id": list(c.eos_token_id) if isinstance(c.eos_token_id, tuple) else c.eos_token_id,
  }


# ----------------------------------------------------------------------------
# Tensor names
# ----------------------------------------------------------------------------


def hf_name(path: str) -> tuple[str, bool]:
  """HF tensor name of a parameter path, and whether its layout is transposed."""
  if path == "lm_head":
    return "lm_head.weight", False
  if path == "embed_tokens":
    return "model.embed_tokens.weight", False
  parts = path.split("/")
  leaf = parts[-1]
  name = "model." + ".".join(parts[:-1])
  if leaf == "kernel":
    return name + ".weight", True
  if leaf == "scale":
    return name + ".weight", False
  if leaf == "bias":
    return name + ".bias", False
  raise ValueError(f"parameter {path!r} has no HF name")


# ----------------------------------------------------------------------------
# safetensors, memory-mapped
# ----------------------------------------------------------------------------


class SafetensorsIndex:
  """Every tensor of a checkpoint directory, read lazily from memory-mapped files."""

  def __init__(self, hf_dir: str):
    self.hf_dir = hf_dir
    index_path = os.path.join(hf_dir, "model.safetensors.index.json")
    if os.path.exists(index_path):
      with open(index_path) as f:
        files = sorted(set(json.load(f)["weight_map"].values()))
    else:
      files = sorted(n for n in os.listdir(hf_dir) if n.endswith(".safetensors"))
    if not files:
      raise FileNotFoundError(f"{hf_dir}: no *.safetensors files (and no model.safetensors.index.json)")
    self._entries: dict[str, tuple[str, np.dtype, tuple[int, ...], int]] = {}
    for name in files:
      path = os.path.join(hf_dir, name)
      if not os.path.exists(path):
        raise FileNotFoundError(f"{index_path} lists {name}, which does not exist")
      with open(path, "rb") as f:
        (n,) = np.frombuffer(f.read(8), np.uint64)
        header = json.loads(f.read(int(n)))
      header.pop("__metadata__", None)
      for tensor, meta in header.items():
        if meta["dtype"] not in _ST_DTYPES:
          raise ValueError(f"{path}: tensor {tensor} has unsupported dtype {meta['dtype']}")
        self._entries[tensor] = (path, _ST_DTYPES[meta["dtype"]], tuple(meta["shape"]),
                                 8 + int(n) + meta["data_offsets"][0])

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  def names(self) -> list[str]:
    return sorted(self._entries)

  def shape(self, name: str) -> tuple[int, ...]:
    return self._entries[name][2]

  def array(self, name: str) -> np.ndarray:
    """The tensor as a read-only memory map: slicing it reads only that slice."""
    path, dtype, shape, offset = self._entries[name]
    if math.prod(shape) == 0:
      return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


def _write_safetensors(path: str, tensors: dict[str, np.ndarray]) -> None:
  header, offset = {"__metadata__": {"format": "pt"}}, 0
  for name, x in tensors.items():
    header[name] = {"dtype": _ST_NAMES[x.dtype], "shape": list(x.shape),
                    "data_offsets": [offset, offset + x.nbytes]}
    offset += x.nbytes
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(np.uint64(len(blob)).tobytes())
    f.write(blob)
    for x in tensors.values():
      f.write(np.ascontiguousarray(x).tobytes())
  os.replace(tmp, path)


# ----------------------------------------------------------------------------
# Import
# ----------------------------------------------------------------------------


def read_hf_config(hf_dir: str) -> dict[str, Any]:
  path = os.path.join(hf_dir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{hf_dir}: no config.json; expected an HF model directory")
  with open(path) as f:
    return json.load(f)


def load_hf(hf_dir: str, mesh: Mesh | None = None, rules=parallel.DEFAULT_RULES,
            **config_overrides) -> tuple[LM, Params]:
  """Reads an HF Llama / Qwen2 / Qwen3 / Gemma 2 / Gemma 3 directory into (LM, params sharded over `mesh`).

  Without a mesh the parameters land on the first device. `config_overrides`
  set ModelConfig fields such as param_dtype, dtype or remat.
  """
  config = config_from_hf(read_hf_config(hf_dir), os.path.join(hf_dir, "config.json"), **config_overrides)
  lm = LM.from_config(config)
  abstract = lm.abstract_params()
  if mesh is None:
    shardings = jax.tree.map(lambda _: SingleDeviceSharding(jax.devices()[0]), abstract)
  else:
    parallel.check_model_fits(config, mesh)
    shardings = parallel.param_shardings(abstract, mesh, rules)
  index = SafetensorsIndex(hf_dir)

  def load(path, leaf, sharding):
    path = parallel.path_str(path)
    name, transposed = hf_name(path)
    expected = tuple(reversed(leaf.shape)) if transposed else tuple(leaf.shape)
    if name not in index:
      raise KeyError(f"{hf_dir}: tensor {name} (parameter {path}, expected shape {expected}) is missing")
    if index.shape(name) != expected:
      raise ValueError(f"{hf_dir}: tensor {name} has shape {index.shape(name)}, expected {expected}")
    source = index.array(name)

    def read(idx):
      block = source[tuple(reversed(idx))].T if transposed else source[idx]
      return np.ascontiguousarray(block.astype(leaf.dtype))

    return jax.make_array_from_callback(leaf.shape, sharding, read)

  params = jax.tree_util.tree_map_with_path(load, abstract, shardings)
  return lm, params


# ----------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------


def _host_tensors(lm: LM, params: Params) -> Iterator[tuple[str, np.ndarray]]:
  """(HF name, full host array) per parameter, gathering one tensor at a time."""
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
    name, transposed = hf_name(parallel.path_str(path))
    if jax.process_count() > 1 and not x.is_fully_addressable:
      x = multihost_utils.process_allgather(x, tiled=True)
    x = np.asarray(x)
    yield name, np.ascontiguousarray(x.T if transposed else x)


def save_hf(lm: LM, params: Params, out_dir: str, max_shard_bytes: int = 4 * 2**30) -> None:
  """Writes config.json and safetensors (index-sharded above `max_shard_bytes`); a LoRA model's adapters
  are merged into its kernels first (W + (alpha / r) A B)."""
  from scorejax.models import lora  # pylint: disable=import-outside-toplevel
  lm, params = lora.merge(lm, params)
  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for name, x in _host_tensors(lm, params):
    if shards[-1] and size + x.nbytes > max_shard_bytes:
      shards.append({})
      size = 0
    shards[-1][name] = x
    size += x.nbytes
  if jax.process_index() != 0:
    return
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(config_to_hf(lm.config), f, indent=2)
  if len(shards) == 1:
    _write_safetensors(os.path.join(out_dir, "model.safetensors"), shards[0])
    return
  weight_map, total = {}, 0
  for i, shard in enumerate(shards):
    fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    _write_safetensors(os.path.join(out_dir, fname), shard)
    weight_map.update({name: fname for name in shard})
    total += sum(x.nbytes for x in shard.values())
  with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
