"""Packing multi-turn episodes into training arrays."""

import numpy as np
import pytest

from scorejax.experiments.episodes import bucket, generated_ids, pack_episodes


def test_pack_episodes_masks_each_attempt_and_right_pads():
  rows = [[([5, 6], None), ([7, 8, 2], "y1"), ([9], None), ([3, 2], "y2")],
          [([5], None), ([2], "y1"), ([9], None), ([4, 4, 2], "y2")]]
  out = pack_episodes(rows, pad_id=0, tags=("y1", "y2"), length_multiple=4)
  assert out["tokens_BxT"].shape == (2, 8)  # longest row 8 tokens, bucket of 4
  np.testing.assert_array_equal(out["tokens_BxT"][1], [5, 2, 9, 4, 4, 2, 0, 0])
  np.testing.assert_array_equal(out["mask_BxT"][1], [1, 1, 1, 1, 1, 1, 0, 0])
  np.testing.assert_array_equal(out["mask_y1_BxT"][0], [0, 0, 1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(out["mask_y2_BxT"][0], [0, 0, 0, 0, 0, 0, 1, 1])
  np.testing.assert_array_equal(out["positions_BxT"][0], np.arange(8))
  # the instruction and the prompt are context only: never in a loss mask
  assert not (out["mask_y1_BxT"] & out["mask_y2_BxT"]).any()
  assert (out["mask_y1_BxT"] | out["mask_y2_BxT"]).sum() == 5 + 4


def test_pack_episodes_rejects_unknown_tags_and_long_rows():
  with pytest.raises(ValueError, match="segment tag 'y3' is not one of"):
    pack_episodes([[([1], "y3")]], 0, ("y1",))
  with pytest.raises(ValueError, match="has 3 tokens, more than max_length=2"):
    pack_episodes([[([1, 2, 3], None)]], 0, (), max_length=2)


def test_bucket_and_generated_ids():
  assert bucket(1, 32) == 32 and bucket(33, 32) == 64 and bucket(0, 8) == 8
  assert generated_ids(np.array([[4, 2, 0], [5, 6, 7]]), np.array([2, 3])) == [[4, 2], [5, 6, 7]]
