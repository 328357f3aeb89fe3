"""Length buckets and left padding.

The sampler is compiled for fixed shapes: prompt length T, generation buffer
N and cache length S. Rounding each up to a bucket means a training run whose
prompts vary from batch to batch compiles a handful of programs instead of one
per batch. Buckets double up to `doubling_until` and then grow by multiples of
it, so padding wastes at most half of a short length and at most
`doubling_until` tokens of a long one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Buckets:
  """Lengths that prompts, generation buffers and caches are rounded up to."""

  min_length: int = 16  # the smallest bucket
  doubling_until: int = 128  # powers of two up to here, multiples of it beyond

  def __post_init__(self):
    if self.min_length < 1 or self.doubling_until < self.min_length:
      raise ValueError(f"Buckets needs 1 <= min_length <= doubling_until, got {self}")

  def __call__(self, n: int) -> int:
    """The smallest bucket that holds n."""
    n = int(n)
    if n <= self.min_length:
      return self.min_length
    if n <= self.doubling_until:
      return max(self.min_length, 1 << (n - 1).bit_length())
    return -(-n // self.doubling_until) * self.doubling_until


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int, length: int | None = None,
             buckets: Buckets | None = Buckets()) -> tuple[np.ndarray, np.ndarray]:
  """tokens_BxT int32 and mask_BxT bool, each row's tokens flush right.

  Left padding puts every row's last token in the last column, where the
  sampler reads the next-token logits. T is `length` when given, else the
  bucket of the longest row (or the longest row itself when buckets is None).
  """
  longest = max((len(s) for s in sequences), default=0)
  if length is None:
    length = buckets(longest) if buckets is not None else longest
  if longest > length:
    raise ValueError(f"left_pad: a row of {longest} tokens does not fit in length {length}")
  tokens_BxT = np.full((len(sequences), length), pad_id, np.int32)
  mask_BxT = np.zeros((len(sequences), length), bool)
  for b, seq in enumerate(sequences):
    if len(seq):
      tokens_BxT[b, length - len(seq):] = np.asarray(seq, np.int32)
      mask_BxT[b, length - len(seq):] = True
  return tokens_BxT, mask_BxT


def unpad(tokens_BxT, mask_BxT) -> list[list[int]]:
  """The real tokens of each row, in order (any padding layout)."""
  tokens_BxT, mask_BxT = np.asarray(tokens_BxT), np.asarray(mask_BxT, bool)
  return [row[m].tolist() for row, m in zip(tokens_BxT, mask_BxT)]
