"""scorejax: train language models that check and correct reasoning, in JAX."""

__version__ = "0.1.0"
