"""Multi-turn episodes as training arrays: packed rows with one loss mask per attempt.

An episode row is the concatenation of segments, e.g. SCoRe's
[x, y1, p, y2]: prompt, first attempt, instruction, second attempt. Rows are
packed to the left and right-padded, so the valid tokens of a row are
contiguous (what teacher-forced log-probs need), and lengths are rounded up to
a multiple of `length_multiple` so that a run compiles a handful of shapes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bucket(length: int, multiple: int) -> int:
  return max(multiple, -(-length // multiple) * multiple)


def pack_episodes(rows: Sequence[Sequence[tuple[Sequence[int], str | None]]], pad_id: int,
                  tags: Sequence[str], length_multiple: int = 32,
                  max_length: int | None = None) -> dict[str, np.ndarray]:
  """Packs rows of (token ids, tag) segments into right-padded arrays.

  Returns tokens_BxT, positions_BxT, mask_BxT and, for each tag in `tags`,
  `mask_<tag>_BxT` marking the tokens of the segments with that tag (the
  tokens a loss trains on). Untagged segments (None) are context only.
  """
  lengths = [sum(len(ids) for ids, _ in row) for row in rows]
  longest = max(lengths)
  if max_length is not None and longest > max_length:
    raise ValueError(f"an episode row has {longest} tokens, more than max_length={max_length}")
  length = bucket(longest, length_multiple)
  b = len(rows)
  out = {"tokens_BxT": np.full((b, length), pad_id, np.int32), "mask_BxT": np.zeros((b, length), bool)}
  for tag in tags:
    out[f"mask_{tag}_BxT"] = np.zeros((b, length), bool)
  for i, row in enumerate(rows):
    t = 0
    for ids, tag in row:
      n = len(ids)
      out["tokens_BxT"][i, t:t + n] = ids
      if tag is not None:
        if tag not in tags:
          raise ValueError(f"segment tag {tag!r} is not one of {tuple(tags)}")
        out[f"mask_{tag}_BxT"][i, t:t + n] = True
      t += n
    out["mask_BxT"][i, :t] = True
  out["positions_BxT"] = np.broadcast_to(np.arange(length, dtype=np.int32), (b, length)).copy()
  return out


def generated_ids(tokens_BxN: np.ndarray, lengths_B: np.ndarray) -> list[list[int]]:
  """Each row's sampled tokens, its stop token included when it emitted one."""
  return [row[:n].tolist() for row, n in zip(np.asarray(tokens_BxN), np.asarray(lengths_B))]
