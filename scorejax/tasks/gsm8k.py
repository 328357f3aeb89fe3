"""GSM8K (Cobbe et al. 2021) through tensorflow-datasets, without TensorFlow.

TensorFlow is not needed: the data is prepared in tfds's `array_record`
format and read back through `builder.as_data_source`. Without TensorFlow
the tfds builder for gsm8k is not registered by `import tensorflow_datasets`
alone, so its module (`tensorflow_datasets.text.gsm8k`) is imported
explicitly here.

Preparing the data once, into the `data_dir` later runs read from:

    # with network access (downloads from github.com/openai/grade-school-math)
    python -m scorejax.tasks.gsm8k --data_dir=/data/tfds
    # offline, from copies of train.jsonl and test.jsonl (optionally
    # train_socratic.jsonl, test_socratic.jsonl) of grade_school_math/data
    python -m scorejax.tasks.gsm8k --data_dir=/data/tfds --source_dir=/data/gsm8k_jsonl

Reading: `read_gsm8k("test", data_dir)` yields `Gsm8kExample`s.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from collections.abc import Iterator

SPLITS = ("train", "test", "train_socratic", "test_socratic")
REQUIRED_SOURCE_SPLITS = ("train", "test")
SOURCE_URL = "https://github.com/openai/grade-school-math/tree/master/grade_school_math/data"

_CALCULATOR_RE = re.compile(r"<<[^<>]*>>")


class Gsm8kNotPrepared(FileNotFoundError):
  """GSM8K has not been prepared in the data_dir; the message says how to prepare it."""


def how_to_prepare(data_dir: str) -> str:
  return (
      f"prepare it once with\n"
      f"  python -m scorejax.tasks.gsm8k --data_dir={data_dir}\n"
      f"on a machine with network access, or offline from copies of train.jsonl and "
      f"test.jsonl ({SOURCE_URL}) with\n"
      f"  python -m scorejax.tasks.gsm8k --data_dir={data_dir} --source_dir=DIR_WITH_JSONL"
  )


def _import_tfds():
  """tensorflow_datasets and the gsm8k builder module, or an error saying what to install."""
  try:
    import tensorflow_datasets as tfds
    from tensorflow_datasets.text.gsm8k import gsm8k as gsm8k_lib
  except ModuleNotFoundError as e:
    raise ImportError(
        f"GSM8K needs tensorflow-datasets, and {e.name!r} is missing: "
        f"`pip install tensorflow-datasets array_record importlib_resources` "
        "(TensorFlow itself is not needed)"
    ) from e
  try:
    import array_record  # noqa: F401  # the on-disk format read without TensorFlow
    import importlib_resources  # noqa: F401  # tfds needs it where TensorFlow is absent
  except ModuleNotFoundError as e:
    raise ImportError(
        f"reading GSM8K through tensorflow-datasets without TensorFlow needs {e.name!r}: "
        f"`pip install {e.name}`"
    ) from e
  return tfds, gsm8k_lib


@dataclasses.dataclass(frozen=True)
class Gsm8kExample:
  question: str
  solution: str  # the reference rationale, without the "#### answer" line
  answer: str  # the short answer, thousands separators removed ("1,000" -> "1000")

  @property
  def steps(self) -> tuple[str, ...]:
    """The rationale's lines, calculator annotations (<<48/2=24>>) removed."""
    lines = (_CALCULATOR_RE.sub("", line).strip() for line in self.solution.split("\n"))
    return tuple(line for line in lines if line)


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _example(record: dict) -> Gsm8kExample:
  return Gsm8kExample(
      question=_text(record["question"]),
      solution=_text(record["annotation"]).strip(),
      answer=_text(record["short_answer"]).strip().replace(",", ""),
  )


def _builder(data_dir: str):
  tfds, gsm8k_lib = _import_tfds()
  del tfds
  return gsm8k_lib.Gsm8k(data_dir=data_dir)


def read_gsm8k(split: str, data_dir: str | os.PathLike) -> Iterator[Gsm8kExample]:
  """Every example of one split of a prepared GSM8K, in the stored order."""
  if split not in SPLITS:
    raise ValueError(f"GSM8K split must be one of {SPLITS}, got {split!r}")
  data_dir = os.fspath(data_dir)
  builder = _builder(data_dir)
  if not builder.is_prepared():
    raise Gsm8kNotPrepared(
        f"GSM8K is not prepared in data_dir {data_dir!r}; {how_to_prepare(data_dir)}"
    )
  if split not in builder.info.splits:
    raise Gsm8kNotPrepared(
        f"GSM8K in {data_dir!r} has no split {split!r} (it has "
        f"{sorted(builder.info.splits)}); {how_to_prepare(data_dir)}"
    )
  try:
    source = builder.as_data_source(split=split)
  except NotImplementedError as e:
    raise Gsm8kNotPrepared(
        f"GSM8K in {data_dir!r} is stored as {builder.info.file_format}, which needs "
        f"TensorFlow to read; prepare it again in array_record format into another "
        f"data_dir: {how_to_prepare('NEW_DATA_DIR')}"
    ) from e
  for i in range(len(source)):
    yield _example(source[i])


def prepare_gsm8k(data_dir: str | os.PathLike, source_dir: str | os.PathLike | None = None) -> None:
  """Write GSM8K into `data_dir` in array_record format.

  Without `source_dir` the tfds builder downloads the official files. With
  it, the splits are read from `source_dir/{split}.jsonl` (train and test
  required, the socratic ones used when present) and nothing is downloaded.
  """
  data_dir = os.fspath(data_dir)
  tfds, gsm8k_lib = _import_tfds()
  if source_dir is None:
    gsm8k_lib.Gsm8k(data_dir=data_dir, file_format="array_record").download_and_prepare()
    return
  source_dir = os.fspath(source_dir)
  files = {s: os.path.join(source_dir, f"{s}.jsonl") for s in SPLITS}
  missing = [files[s] for s in REQUIRED_SOURCE_SPLITS if not os.path.isfile(files[s])]
  if missing:
    raise FileNotFoundError(
        f"GSM8K source files missing: {missing}; copy train.jsonl and test.jsonl from {SOURCE_URL}"
    )
  present = {s: path for s, path in files.items() if os.path.isfile(path)}

  class LocalGsm8k(gsm8k_lib.Gsm8k, skip_registration=True):
    """The tfds gsm8k builder, fed from local copies of the official files."""

    name = "gsm8k"  # same directory and name as the registered builder reads

    def _split_generators(self, dl_manager):
      del dl_manager  # nothing to download
      return {s: self._generate_examples(path) for s, path in present.items()}

  del tfds
  LocalGsm8k(data_dir=data_dir, file_format="array_record").download_and_prepare()


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m scorejax.tasks.gsm8k", description="Prepare GSM8K for scorejax."
  )
  parser.add_argument("--data_dir", required=True, help="tfds data_dir to write into")
  parser.add_argument(
      "--source_dir", default=None, help="directory with train.jsonl and test.jsonl (offline)"
  )
  args = parser.parse_args(argv)
  prepare_gsm8k(args.data_dir, args.source_dir)
  for split in SPLITS:
    try:
      count = sum(1 for _ in read_gsm8k(split, args.data_dir))
    except Gsm8kNotPrepared:
      continue
    print(f"{split}: {count} examples in {args.data_dir}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
