"""Decoder-only language models (Llama, Qwen2 / Qwen3, Gemma 2 / Gemma 3), their HF checkpoints, LoRA."""

from scorejax.models.config import LoraConfig, ModelConfig, RopeScaling, tiny_arith
from scorejax.models.lm import LM, Params
from scorejax.models.transformer import KVCache, Transformer, init_cache

__all__ = ["LM", "KVCache", "LoraConfig", "ModelConfig", "Params", "RopeScaling", "Transformer", "init_cache", "tiny_arith"]
