"""scorejax: train language models that check and correct reasoning, in JAX."""

from scorejax import xla_flags as _xla_flags

_xla_flags.apply()

__version__ = "0.1.0"
