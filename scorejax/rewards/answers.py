"""Final-answer extraction and equivalence: the verifiable reward r(y, y*).

Extraction looks for, in this order of priority (the last occurrence of the
first kind found wins):

  1. \\boxed{...} or \\fbox{...} (nested braces balanced; \\boxed 5 too)
  2. "The final answer is ..." (SCoRe / Minerva: "Final Answer: The final
     answer is $answer$. I hope it is correct.")
  3. "#### ..." (GSM8K)
  4. "The answer is ..."
  5. a line "Answer: ..." (the built-in arithmetic task's answer line)
  6. "# Answer" and the answer on the next non-empty line (PRM800K's last step)

Equivalence first compares cheap canonical strings and integers, then hands
the two answers to math-verify (HF's maintained parser and grader) under a
time limit per check, in a worker process that is killed when a check will
not stop; a check that runs out of time counts as not equivalent.

Nothing here raises on text: extractors return None when they find nothing,
and a check that fails inside math-verify is simply False. Both properties
are exercised with hypothesis in tests/test_answers.py.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time

DEFAULT_TIMEOUT_S = 5.0  # seconds per equivalence check (parse + verify of both answers)

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\b[ \t]*")
_BARE_TOKEN_RE = re.compile(r"[^\s$]+")
_FINAL_ANSWER_RE = re.compile(r"the final answer is[ \t]*:?([^\n]*)", re.IGNORECASE)
_HASHES_RE = re.compile(r"####([^\n]*)")
_THE_ANSWER_RE = re.compile(r"\bthe answer is[ \t]*:?([^\n]*)", re.IGNORECASE)
_ANSWER_LINE_RE = re.compile(r"^[ \t]*answer[ \t]*:([^\n]*)", re.IGNORECASE | re.MULTILINE)
_PRM_ANSWER_RE = re.compile(r"^[ \t]*#[ \t]*Answer[ \t]*\n\s*([^\n]*)", re.IGNORECASE | re.MULTILINE)
_ARITH_ANSWER_RE = re.compile(r"^[ \t]*Answer:[ \t]*(-?\d{1,18})[ \t]*$", re.MULTILINE)
_HOPE_RE = re.compile(r"I hope it is correct", re.IGNORECASE)
_THOUSANDS_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_INT_RE = re.compile(r"[-+]?\d{1,18}")


def _closing_braces(text: str) -> dict[int, int]:
  """Position of each '{' -> position of its matching '}', in one pass.

  Backslash-escaped braces (\\{ \\} in set notation) are content, not grouping.
  """
  closing, stack = {}, []
  i, n = 0, len(text)
  while i < n:
    c = text[i]
    if c == "\\":
      i += 2
      continue
    if c == "{":
      stack.append(i)
    elif c == "}" and stack:
      closing[stack.pop()] = i
    i += 1
  return closing


def extract_boxed(text: str) -> str | None:
  """Content of the last well-formed \\boxed{...} / \\fbox{...} / \\boxed x, or None."""
  matches = list(_BOXED_RE.finditer(text))
  if not matches:
    return None
  closing = None
  for m in reversed(matches):
    start = m.end()
    if start < len(text) and text[start] == "{":
      if closing is None:
        closing = _closing_braces(text)
      end = closing.get(start)
      if end is not None:
        return text[start + 1 : end]
      continue
    bare = _BARE_TOKEN_RE.match(text, start)
    if bare:
      return bare.group(0)
  return None


def _clean(raw: str) -> str | None:
  """An answer phrase without its wrapping: '$5$. I hope it is correct.' -> '5'."""
  hope = _HOPE_RE.search(raw)
  s = (raw[: hope.start()] if hope else raw).strip()
  boxed = extract_boxed(s)
  if boxed is not None:
    s = boxed.strip()
  s = s.rstrip(".").strip()
  if len(s) >= 2 and s.startswith("$") and s.endswith("$"):
    s = s.strip("$").strip()
  return s or None


def _last_match(pattern: re.Pattern, text: str) -> re.Match | None:
  match = None
  for match in pattern.finditer(text):  # noqa: B007  # walks to the last match, no list
    pass
  return match


def _last(pattern: re.Pattern, text: str) -> str | None:
  match = _last_match(pattern, text)
  return None if match is None else _clean(match.group(1))


def extract_final_answer(text: str) -> str | None:
  """The final answer of a solution (see the module docstring for the order), or None."""
  boxed = extract_boxed(text)
  if boxed is not None and boxed.strip():
    return boxed.strip()
  for pattern in (_FINAL_ANSWER_RE, _HASHES_RE, _THE_ANSWER_RE, _ANSWER_LINE_RE, _PRM_ANSWER_RE):
    found = _last(pattern, text)
    if found is not None:
      return found
  return None


def extract_arith_answer(text: str) -> int | None:
  """The integer on the last 'Answer: N' line of a built-in task solution, or None."""
  match = _last_match(_ARITH_ANSWER_RE, text)
  return None if match is None else int(match.group(1))


def normalize_answer(answer: str) -> str:
  """A cheap canonical form for the fast path: no spaces, $, trailing period or
  thousands separators."""
  s = answer.strip().rstrip(".").strip()
  if len(s) >= 2 and s.startswith("$") and s.endswith("$"):
    s = s.strip("$")
  s = s.replace("\\!", "").replace("\\,", "").replace("\\left", "").replace("\\right", "")
  s = "".join(s.split()).rstrip(".")
  if _THOUSANDS_RE.fullmatch(s):
    s = s.replace(",", "")
  return s


# ------------------------------------------------------------------ checks
#
# math-verify runs in a worker process (`python -m scorejax.rewards.answers`).
# Inside it, SIGALRM ends a check at its time limit. That is not enough on
# its own: an alarm raised inside a gc callback or __del__ is swallowed (the
# property tests hit this once and the check ran for 15 minutes), and C code
# such as big-integer arithmetic never sees a signal at all. So the alarm
# repeats until disarmed, and the caller waits at most timeout_s +
# VERIFIER_KILL_GRACE_S for the answer before it kills the worker; the next
# check starts a fresh one. The caller needs no signals: any thread may ask.

VERIFIER_STARTUP_S = 120.0  # first start imports sympy; slow shared machines need slack
VERIFIER_KILL_GRACE_S = 1.0  # wait beyond timeout_s before the worker counts as stuck
MAX_VERIFY_CHARS = 10_000  # longer answers are not final answers; they are not sent to sympy
_ALARM_REPEAT_S = 0.05  # the alarm keeps firing until disarmed, so one swallowed is not the last

logger = logging.getLogger(__name__)


class CheckTimeout(BaseException):
  """Raised inside the worker when a check's time is up.

  A BaseException, so that the `except Exception` handlers inside
  math-verify and sympy cannot swallow it and keep computing.
  """


def _raise_check_timeout(signum, frame):
  raise CheckTimeout("answer check ran out of time")


def _disarm() -> None:
  while True:
    try:
      signal.setitimer(signal.ITIMER_REAL, 0)
      return
    except CheckTimeout:
      continue


class _DropTimeoutDisabledWarning(logging.Filter):
  """math-verify warns when its own timeout is off; the worker's alarm replaces it."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Timeout is disabled")


def _load_math_verify():
  import math_verify  # imports sympy: only the worker process pays for it

  for name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(name).addFilter(_DropTimeoutDisabledWarning())
  return math_verify


def _verify_in_worker(mv, prediction: str, reference: str, timeout_s: float) -> bool | None:
  """math-verify's verdict, or None when the alarm ended it."""
  try:
    try:
      signal.setitimer(signal.ITIMER_REAL, timeout_s, _ALARM_REPEAT_S)
      gold = mv.parse("$" + reference + "$", parsing_timeout=None)
      target = mv.parse("$" + prediction + "$", parsing_timeout=None)
      return bool(gold) and bool(target) and bool(mv.verify(gold, target, timeout_seconds=None))
    finally:
      _disarm()
  except CheckTimeout:
    _disarm()
    return None
  except Exception:  # math-verify guards most of its code; sympy printing can still raise
    return False


def serve() -> None:
  """The worker: one JSON request per line on stdin, one JSON reply per line on stdout."""
  out = os.fdopen(os.dup(1), "wb", buffering=0)
  os.dup2(2, 1)  # anything sympy prints must not corrupt the replies
  sys.stdout = sys.stderr
  signal.signal(signal.SIGALRM, _raise_check_timeout)
  mv = _load_math_verify()
  out.write(b'{"ready": true}\n')
  for line in sys.stdin.buffer:
    try:
      request = json.loads(line)
      equal = _verify_in_worker(
          mv, request["prediction"], request["reference"], float(request["timeout_s"])
      )
      out.write(json.dumps({"equal": equal}).encode() + b"\n")
    except CheckTimeout:
      _disarm()  # a late alarm: the caller sees no reply in time and restarts the worker


class _Verifier:
  """The caller's side of the worker: start, ask with a deadline, kill when stuck."""

  def __init__(self):
    self._proc = None
    self._pending = b""
    self._lock = threading.Lock()

  def _start(self) -> None:
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    self._proc = subprocess.Popen(
        [sys.executable, "-m", "scorejax.rewards.answers"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    self._pending = b""
    reply = self._receive(time.monotonic() + VERIFIER_STARTUP_S)
    if not reply or not reply.get("ready"):
      self.close()
      raise RuntimeError(
          "the math-verify worker (python -m scorejax.rewards.answers) did not start within "
          f"{VERIFIER_STARTUP_S} s; run that command by hand to see its error"
      )

  def _receive(self, deadline: float) -> dict | None:
    fd = self._proc.stdout.fileno()
    while b"\n" not in self._pending:
      left = deadline - time.monotonic()
      if left <= 0 or not select.select([fd], [], [], left)[0]:
        return None
      chunk = os.read(fd, 65536)
      if not chunk:
        return None  # the worker died
      self._pending += chunk
    line, _, self._pending = self._pending.partition(b"\n")
    try:
      reply = json.loads(line)
    except ValueError:
      return None
    return reply if isinstance(reply, dict) else None

  def check(self, prediction: str, reference: str, timeout_s: float) -> bool:
    with self._lock:
      if self._proc is None or self._proc.poll() is not None:
        self._start()
      request = {"prediction": prediction, "reference": reference, "timeout_s": timeout_s}
      try:
        self._proc.stdin.write(json.dumps(request).encode() + b"\n")
        self._proc.stdin.flush()
      except OSError:
        self.close()
        return False
      reply = self._receive(time.monotonic() + timeout_s + VERIFIER_KILL_GRACE_S)
      if reply is None or "equal" not in reply:
        logger.warning(
            "answer check %.60r vs %.60r did not finish in %.1f s; restarting the worker",
            prediction, reference, timeout_s,
        )
        self.close()
        return False
      return reply["equal"] is True

  def close(self) -> None:
    if self._proc is not None:
      self._proc.kill()
      self._proc.wait()
      self._proc.stdin.close()
      self._proc.stdout.close()
    self._proc = None
    self._pending = b""


_VERIFIER = _Verifier()
atexit.register(_VERIFIER.close)


def close_verifier() -> None:
  """Stop the worker process now (it restarts on the next check)."""
  _VERIFIER.close()


def _as_int(s: str) -> int | None:
  return int(s) if _INT_RE.fullmatch(s) else None


def answers_equivalent(
    prediction: str | None, reference: str | None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> bool:
  """Is `prediction` mathematically the same answer as `reference`?

  Equal canonical strings or integers decide at once; anything else goes to
  math-verify (asymmetric: the reference is the gold side), both parsed as
  LaTeX math. Out of time, unparseable or longer than MAX_VERIFY_CHARS:
  False. Safe to call from any thread.
  """
  if timeout_s <= 0:
    raise ValueError(f"answers_equivalent needs timeout_s > 0, got {timeout_s}")
  if prediction is None or reference is None:
    return False
  p, r = normalize_answer(prediction), normalize_answer(reference)
  if not p or not r:
    return False
  if p == r:
    return True
  ip, ir = _as_int(p), _as_int(r)
  if ip is not None and ir is not None:
    return ip == ir
  if len(p) > MAX_VERIFY_CHARS or len(r) > MAX_VERIFY_CHARS:
    return False
  return _VERIFIER.check(p, r, timeout_s)


def math_reward(response: str, reference: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> float:
  """r(y, y*) in {0, 1}: the extracted final answer of `response` equals `reference`."""
  return float(answers_equivalent(extract_final_answer(response), reference, timeout_s))


if __name__ == "__main__":
  serve()
