"""Run an experiment: python -m scorejax.main --config=configs/<exp>.py[:arg] --workdir=DIR.

Any config field can be overridden on the command line, e.g.
`--config.seed=1 --config.stage2.alpha=5`. Running the same command again
resumes from the workdir's latest checkpoints; a workdir holds one config,
and a rerun whose config would change its results is refused (exit 2) with
the differing keys named.
"""

from __future__ import annotations

import importlib
import logging
import sys

from absl import app, flags
from ml_collections import config_flags

from scorejax import parallel, phases

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")

EXPERIMENTS = ("score", "deepcritic", "spc", "critique_loop")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is None or not _WORKDIR.value:
    raise app.UsageError("--config and --workdir are required")
  if config.experiment not in EXPERIMENTS:
    raise app.UsageError(f"config.experiment={config.experiment!r}; expected one of {EXPERIMENTS}")
  parallel.initialize_distributed()
  logging.getLogger("absl").setLevel(logging.WARNING)
  experiment = importlib.import_module(f"scorejax.experiments.{config.experiment}")
  try:
    experiment.run(config, _WORKDIR.value)
  except phases.ConfigMismatch as e:
    print(str(e), file=sys.stderr)
    sys.exit(2)
  except phases.Preempted as e:
    print(str(e), file=sys.stderr)
    sys.exit(143)


if __name__ == "__main__":
  app.run(main)
