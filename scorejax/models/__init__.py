"""Decoder-only language models (Llama and Qwen2 families) and their HF checkpoints."""

from scorejax.models.config import ModelConfig, RopeScaling, tiny_arith
from scorejax.models.lm import LM, Params
from scorejax.models.transformer import KVCache, Transformer, init_cache

__all__ = ["LM", "KVCache", "ModelConfig", "Params", "RopeScaling", "Transformer", "init_cache", "tiny_arith"]
