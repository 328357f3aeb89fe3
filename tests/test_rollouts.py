"""Packing multi-turn episodes into training arrays, with the sampler's log-probs aligned."""

import numpy as np
import pytest

from scorejax.rollouts import Segment, bucket, generated_ids, to_batch


def test_to_batch_masks_each_attempt_and_right_pads():
  rows = [[([5, 6], None), ([7, 8, 2], "y1"), ([9], None), ([3, 2], "y2")],
          [([5], None), ([2], "y1"), ([9], None), ([4, 4, 2], "y2")]]
  out = to_batch(rows, pad_id=0, tags=("y1", "y2"), length_multiple=4)
  assert out["tokens_BxT"].shape == (2, 8)  # longest row 8 tokens, bucket of 4
  np.testing.assert_array_equal(out["tokens_BxT"][1], [5, 2, 9, 4, 4, 2, 0, 0])
  np.testing.assert_array_equal(out["mask_BxT"][1], [1, 1, 1, 1, 1, 1, 0, 0])
  np.testing.assert_array_equal(out["mask_y1_BxT"][0], [0, 0, 1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(out["mask_y2_BxT"][0], [0, 0, 0, 0, 0, 0, 1, 1])
  np.testing.assert_array_equal(out["positions_BxT"][0], np.arange(8))
  # the instruction and the prompt are context only: never in a loss mask
  assert not (out["mask_y1_BxT"] & out["mask_y2_BxT"]).any()
  assert (out["mask_y1_BxT"] | out["mask_y2_BxT"]).sum() == 5 + 4


def test_to_batch_rejects_unknown_tags_and_long_rows():
  with pytest.raises(ValueError, match="segment tag 'y3' is not one of"):
    to_batch([[([1], "y3")]], 0, ("y1",))
  with pytest.raises(ValueError, match="has 3 tokens, more than max_length=2"):
    to_batch([[([1, 2, 3], None)]], 0, (), max_length=2)


def test_bucket_and_generated_ids():
  assert bucket(1, 32) == 32 and bucket(33, 32) == 64 and bucket(0, 8) == 8
  assert generated_ids(np.array([[4, 2, 0], [5, 6, 7]]), np.array([2, 3])) == [[4, 2], [5, 6, 7]]


def test_sampler_logprobs_sit_at_their_tokens_columns():
  rows = [[Segment([5, 6]), Segment([7, 8], "critique", [-0.5, -1.5])],
          [Segment([5]), Segment([2, 3, 4], "critique", [-0.1, -0.2, -0.3])]]
  out = to_batch(rows, pad_id=0, tags=("critique",), length_multiple=4)
  # Column t holds log p(token t | tokens < t), as objectives.logprobs.sequence_logprobs does;
  # a one-off shift would put -0.5 at column 1 and leave column 3 empty.
  np.testing.assert_allclose(out["sampler_logp_BxT"][0], [0, 0, -0.5, -1.5])
  np.testing.assert_allclose(out["sampler_logp_BxT"][1], [0, -0.1, -0.2, -0.3])
  np.testing.assert_array_equal(out["mask_critique_BxT"][1], [0, 1, 1, 1])
  assert "sampler_logp_BxT" not in to_batch([[([1], None)]], 0, ())


def test_a_segment_with_the_wrong_number_of_logprobs_is_refused():
  with pytest.raises(ValueError, match="a segment of 2 tokens carries 1 log-probs"):
    to_batch([[Segment([1, 2], "critique", [-0.1])]], 0, ("critique",))
