"""scorejax: train language models that check and correct reasoning, in JAX."""

from scorejax import allocator as _allocator
from scorejax import xla_flags as _xla_flags

_xla_flags.apply()
_allocator.apply()

__version__ = "0.1.0"
