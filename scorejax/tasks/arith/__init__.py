"""The built-in arithmetic reasoning task: every step of every solution is checkable.

  problems.py    difficulty knobs (`ArithConfig`, `PRESETS`), sampling, phrasing, splits
  check.py       solution lines, the exact checker (`earliest_error`, `check_solution`), rewards
  noise.py       error makers (`ERROR_TYPES`, `corrupt_step`), continuations, noisy writers
  references.py  outputs written from the checker: short critiques, ProcessBench records
  critiques.py   deliberate step-wise critiques (DeepCritic format): writer, seed annotator, strict parser

Everything but `critiques` is re-exported here, so callers write `arith.write_solution(...)`
and `arith.critiques.parse_critique(...)`.
"""

from scorejax.tasks.arith.check import *  # noqa: F401,F403
from scorejax.tasks.arith.noise import *  # noqa: F401,F403
from scorejax.tasks.arith.problems import *  # noqa: F401,F403
from scorejax.tasks.arith.references import *  # noqa: F401,F403
from scorejax.tasks.arith import critiques  # noqa: E402,F401
