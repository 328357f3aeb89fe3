"""Running untrusted Python (a generated program and its tests) in a sandboxed worker process.

    sandbox = Sandbox(SandboxConfig(timeout_s=10))
    outcome = sandbox.run(program_and_tests)      # Outcome(passed, reason, detail, seconds)
    outcomes = sandbox.run_many(sources)          # concurrently, `workers` at a time

Every program runs in a fresh temporary directory, in its own process group,
as a worker that this file itself is (a copy of it is the worker's script,
run by the base interpreter with `-I -S`: the standard library only). Layers,
from the outside in:

  isolation  "bwrap": bubblewrap (a read-only root, a private /tmp holding
             only the program's directory, no network, its own process and
             IPC namespaces); "unshare": util-linux namespaces (no network,
             its own process namespace); "rlimits": neither. "auto" takes
             the first of these that works on this machine (`Sandbox.isolation`
             says which one a run used).
  user       run as nobody (uid 65534) when started by root, so that the
             process limit holds and the file system's permissions apply.
  rlimits    address space, CPU seconds, file size, open files, processes,
             no core files: the floor on every machine.
  parent     kills the whole process group on a wall-clock timeout or when
             the output passes `output_bytes`.
  guard      inside the interpreter, before the program runs: no process
             creation, signals or privilege changes; no sockets, ctypes or
             subprocess modules; no writing, removing or renaming outside
             the program's directory. An attempt is recorded even when the
             program catches the error, and the outcome is "forbidden".
             The guard is not a security boundary on its own (a determined
             program can reach around Python); the isolation tool is.

A program passes only when it runs to its end: the worker reports through a
pipe of its own, with a per-run token the program never receives on any
channel, so an early `exit(0)`, `os._exit(0)` or printed text is never a
pass (a program that walks the worker's interpreter frames could still find
the token; nothing else can).

Reasons (`Outcome.reason`): passed, failed (an assertion), error (any other
exception, or an exit before the end), syntax, timeout, memory,
output_limit, forbidden, crashed (killed by a signal).
"""

from __future__ import annotations

import builtins
import dataclasses
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

REASONS = ("passed", "failed", "error", "syntax", "timeout", "memory", "output_limit", "forbidden", "crashed")
ISOLATIONS = ("auto", "bwrap", "unshare", "rlimits")
NOBODY = 65534
PROGRAM_FILE = "program.py"
WORKER_FILE = "worker.py"
DETAIL_CHARS = 300  # of an outcome's detail (the error line, the forbidden call)


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
  timeout_s: float = 10.0  # wall clock per program, tests included
  memory_mb: int = 1024  # address space (RLIMIT_AS)
  output_bytes: int = 1 << 16  # stdout + stderr kept; more kills the program (reason output_limit)
  file_size_mb: int = 16  # largest file it may write (RLIMIT_FSIZE)
  open_files: int = 64  # RLIMIT_NOFILE
  processes: int = 64  # RLIMIT_NPROC (enforced for a non-root user: root's runs drop to nobody)
  isolation: str = "auto"  # auto, bwrap, unshare or rlimits (module docstring)
  workers: int = 0  # programs run at once by run_many; 0: one per CPU
  python_guard: bool = True  # the in-interpreter guard; False lets programs spawn processes or open sockets,
  # leaving only the isolation tool and the rlimits in their way


@dataclasses.dataclass(frozen=True)
class Outcome:
  passed: bool
  reason: str  # one of REASONS
  detail: str  # the error line, the forbidden call, the signal; "" when it passed
  seconds: float  # wall clock of the worker
  output: str = ""  # the program's stdout and stderr, cut at output_bytes


class SandboxUnavailable(OSError):
  """The isolation a config asks for does not work on this machine; the message says why."""


def sandbox_config(config) -> SandboxConfig:
  """A SandboxConfig from a config block with (some of) its fields, e.g. config.task.sandbox."""
  fields = {f.name for f in dataclasses.fields(SandboxConfig)}
  unknown = sorted(set(config.keys()) - fields)
  if unknown:
    raise ValueError(f"sandbox config: unknown keys {unknown}; expected some of {sorted(fields)}")
  return SandboxConfig(**{k: config[k] for k in config.keys()})


# ----------------------------------------------------------------------------
# The parent: isolation, one program, many programs
# ----------------------------------------------------------------------------


def _interpreters() -> list[str]:
  """Interpreters a worker may run on, best first: this one's base (not a virtual environment's link to it),
  then the system's python3 (readable by nobody where the base one is not). The worker needs the standard
  library only."""
  out = [os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)]
  system = shutil.which("python3", path="/usr/bin:/bin")
  return out + ([os.path.realpath(system)] if system and os.path.realpath(system) not in out else [])


def _prefix(isolation: str, directory: str, as_user: bool) -> list[str]:
  """The command a worker runs under: bubblewrap, unshare or nothing."""
  if isolation == "bwrap":
    return ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
            "--bind", directory, directory, "--chdir", directory, "--unshare-all", "--die-with-parent",
            "--new-session"]
  if isolation == "unshare":
    user = ["--user", "--map-root-user"] if as_user or os.geteuid() != 0 else []
    return ["unshare", *user, "--net", "--pid", "--fork", "--kill-child"]
  return []


@dataclasses.dataclass(frozen=True)
class Isolation:
  tool: str  # bwrap, unshare or rlimits
  uid: int | None  # the user a worker runs as; None: this process's
  python: str  # the interpreter a worker runs on


_RESOLVED: dict[str, Isolation] = {}
_RESOLVE_LOCK = threading.Lock()


def _probe(isolation: Isolation) -> str:
  """"" when a trivial program passes under `isolation`, else what went wrong."""
  if isolation.tool != "rlimits" and not shutil.which(isolation.tool):
    return f"{isolation.tool} is not installed"
  outcome = _run(PROBE_SOURCE, SandboxConfig(timeout_s=30.0), isolation)
  return "" if outcome.passed else f"{outcome.reason}: {outcome.detail} {outcome.output}".strip()


PROBE_SOURCE = "assert sum(range(4)) == 6\n"


def resolve_isolation(requested: str) -> Isolation:
  """The isolation a requested one ("auto", "bwrap", ...) is here, probed once per process.

  "auto" is the first of bwrap, unshare, rlimits whose probe passes. Started
  by root, a worker runs as nobody when some interpreter is readable by
  nobody, else as root (`Sandbox.description` says which).
  """
  if requested not in ISOLATIONS:
    raise ValueError(f"sandbox isolation {requested!r}; expected one of {ISOLATIONS}")
  with _RESOLVE_LOCK:
    if requested not in _RESOLVED:
      tools = ("bwrap", "unshare", "rlimits") if requested == "auto" else (requested,)
      users = (NOBODY, None) if os.geteuid() == 0 else (None,)
      candidates = [Isolation(t, u, p) for t in tools for u in users for p in _interpreters()]
      failures = []
      for candidate in candidates:
        why = _probe(candidate)
        if not why:
          _RESOLVED[requested] = candidate
          break
        failures.append(f"{candidate}: {why}")
      else:
        raise SandboxUnavailable(f"sandbox isolation {requested!r} does not work here: " + "; ".join(failures))
  return _RESOLVED[requested]


class Sandbox:
  """Runs Python sources as sandboxed workers under one config (module docstring)."""

  def __init__(self, config: SandboxConfig = SandboxConfig()):
    self.config = config
    self.isolation = resolve_isolation(config.isolation)

  @property
  def description(self) -> str:
    """What a run used, for logs and result files."""
    uid = self.isolation.uid
    user = "as nobody" if uid is not None else ("as root" if os.geteuid() == 0 else "as this user")
    guard = ", python guard" if self.config.python_guard else ""
    layers = "rlimits" if self.isolation.tool == "rlimits" else f"{self.isolation.tool} + rlimits"
    return f"{layers}, {user}{guard} ({self.isolation.python})"

  def run(self, source: str) -> Outcome:
    return _run(source, self.config, self.isolation)

  def run_many(self, sources: list[str]) -> list[Outcome]:
    workers = self.config.workers or os.cpu_count() or 1
    if len(sources) <= 1 or workers == 1:
      return [self.run(s) for s in sources]
    with ThreadPoolExecutor(max_workers=min(workers, len(sources))) as pool:
      return list(pool.map(self.run, sources))


def _kill_group(proc: subprocess.Popen) -> None:
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass


def _run(source: str, config: SandboxConfig, isolation: Isolation) -> Outcome:
  """One program in a fresh directory; the directory and every process it started are gone on return."""
  uid = isolation.uid
  start = time.monotonic()
  with tempfile.TemporaryDirectory(prefix="scorejax-sandbox-") as directory:
    directory = os.path.realpath(directory)
    for name, text in ((PROGRAM_FILE, source), (WORKER_FILE, _worker_source())):
      with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
        f.write(text)
    if uid is not None:
      for path in (directory, os.path.join(directory, PROGRAM_FILE), os.path.join(directory, WORKER_FILE)):
        os.chown(path, uid, uid)
    limits = {"memory_mb": config.memory_mb, "cpu_s": int(config.timeout_s) + 1,
              "file_size_mb": config.file_size_mb, "open_files": config.open_files,
              "processes": config.processes, "python_guard": config.python_guard}
    token = secrets.token_hex(16)
    read_fd, write_fd = os.pipe()
    command = _prefix(isolation.tool, directory, uid is not None) + [
        isolation.python, "-I", "-S", "-B", os.path.join(directory, WORKER_FILE), str(write_fd), json.dumps(limits)]
    user = dict(user=uid, group=uid, extra_groups=[]) if uid is not None else {}
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": directory}
    try:
      proc = subprocess.Popen(command, cwd=directory, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, pass_fds=(write_fd,), start_new_session=True, env=env,
                              **user)
    except OSError as e:
      os.close(read_fd)
      os.close(write_fd)
      return Outcome(False, "error", f"could not start the worker: {e}"[:DETAIL_CHARS], 0.0)
    os.close(write_fd)
    output, report, overflow = bytearray(), bytearray(), threading.Event()

    def read_output():
      fd = proc.stdout.fileno()
      while chunk := os.read(fd, 1 << 16):
        if len(output) + len(chunk) > config.output_bytes:
          output.extend(chunk[:config.output_bytes - len(output)])
          overflow.set()
          _kill_group(proc)
          return
        output.extend(chunk)

    def read_report():
      while chunk := os.read(read_fd, 4096):
        report.extend(chunk[:4096 - len(report)])

    readers = [threading.Thread(target=read_output, daemon=True), threading.Thread(target=read_report, daemon=True)]
    for t in readers:
      t.start()
    try:
      proc.stdin.write(f"{token}\n".encode())
      proc.stdin.close()
    except BrokenPipeError:
      pass
    timed_out = False
    try:
      proc.wait(timeout=config.timeout_s)
    except subprocess.TimeoutExpired:
      timed_out = True
    _kill_group(proc)  # whatever it left running
    proc.wait()
    for t in readers:
      t.join(timeout=5.0)
    os.close(read_fd)
    proc.stdout.close()
  seconds = time.monotonic() - start
  text = output.decode("utf-8", "replace")
  reason, detail = _verdict(report.decode("utf-8", "replace"), token, proc.returncode, timed_out,
                            overflow.is_set(), config)
  return Outcome(reason == "passed", reason, detail[:DETAIL_CHARS], seconds, text)


def _verdict(report: str, token: str, returncode: int, timed_out: bool, overflow: bool,
             config: SandboxConfig) -> tuple[str, str]:
  """(reason, detail) from the worker's report line and how its process ended."""
  if overflow:
    return "output_limit", f"more than {config.output_bytes} bytes of output"
  if timed_out:
    return "timeout", f"still running after {config.timeout_s:g} s"
  for line in report.splitlines():
    if line.startswith(token + " "):
      reason, _, detail = line[len(token) + 1:].partition(" ")
      if reason in REASONS:
        return reason, detail
  if returncode < 0:
    sig = signal.Signals(-returncode)
    if sig == signal.SIGXCPU:
      return "timeout", f"more than {int(config.timeout_s) + 1} CPU seconds"
    return "crashed", f"killed by {sig.name}"
  return "error", f"exited with status {returncode} before its end"


@functools.lru_cache(maxsize=1)
def _worker_source() -> str:
  """This file's text, the worker's script: read once per process, written into every program's directory."""
  with open(__file__, encoding="utf-8") as f:
    return f.read()


# ----------------------------------------------------------------------------
# The worker: limits, user, guard, the program (runs as `python -I -S worker.py FD LIMITS`)
# ----------------------------------------------------------------------------


BLOCKED_MODULES = frozenset({"socket", "_socket", "ssl", "_ssl", "subprocess", "_posixsubprocess",
                             "multiprocessing", "_multiprocessing", "ctypes", "_ctypes", "pty", "resource"})
BLOCKED_CALLS = ("fork", "forkpty", "system", "popen", "execv", "execve", "execl", "execle", "execlp", "execlpe",
                 "execvp", "execvpe", "spawnv", "spawnve", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnvp",
                 "spawnvpe", "posix_spawn", "posix_spawnp", "kill", "killpg", "setsid", "setpgid", "setpgrp",
                 "setuid", "setgid", "seteuid", "setegid", "setreuid", "setregid", "setresuid", "setresgid",
                 "chroot", "chown", "lchown", "fchown", "pidfd_open", "register_at_fork", "putenv", "unsetenv")
PATH_CALLS = {"remove": 1, "unlink": 1, "rmdir": 1, "mkdir": 1, "rename": 2, "replace": 2, "chmod": 1,
              "truncate": 1, "link": 2, "symlink": 2, "mkfifo": 1, "mknod": 1, "utime": 1}  # name: paths
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _set_limits(limits: dict) -> None:
  import resource

  mb = 1 << 20
  for name, value in (("RLIMIT_AS", limits["memory_mb"] * mb), ("RLIMIT_CPU", limits["cpu_s"]),
                      ("RLIMIT_FSIZE", limits["file_size_mb"] * mb), ("RLIMIT_NOFILE", limits["open_files"]),
                      ("RLIMIT_NPROC", limits["processes"]), ("RLIMIT_CORE", 0)):
    resource.setrlimit(getattr(resource, name), (value, value))


def _install_guard(directory: str, violations: list) -> None:
  """Python-level limits (module docstring); each attempt appends to `violations` and raises PermissionError."""
  import io
  import posix

  def violate(what: str):
    violations.append(what)
    raise PermissionError(f"sandbox: {what} is not allowed")

  def inside(path) -> bool:
    if isinstance(path, int):  # an already-open descriptor
      return True
    full = os.path.realpath(os.path.join(directory, os.fsdecode(path)))
    return full == directory or full.startswith(directory + os.sep) or full == os.devnull

  def blocked(name):
    return lambda *args, **kwargs: violate(f"os.{name}")

  def path_checked(name, fn, n_paths):
    def call(*args, **kwargs):
      for path in args[:n_paths]:
        if not inside(path):
          violate(f"os.{name}({os.fsdecode(path)!r})")
      return fn(*args, **kwargs)
    return call

  real_open, real_os_open = builtins.open, os.open

  def guarded_open(file, mode="r", *args, **kwargs):
    if any(c in mode for c in "wax+") and not inside(file):
      violate(f"open({file!r}, {mode!r})")
    return real_open(file, mode, *args, **kwargs)

  def guarded_os_open(path, flags, *args, **kwargs):
    if flags & WRITE_FLAGS and not inside(path):
      violate(f"os.open({path!r})")
    return real_os_open(path, flags, *args, **kwargs)

  for module in (os, posix):
    for name in BLOCKED_CALLS:
      if hasattr(module, name):
        setattr(module, name, blocked(name))
    for name, n_paths in PATH_CALLS.items():
      if hasattr(module, name):
        setattr(module, name, path_checked(name, getattr(module, name), n_paths))
    module.open = guarded_os_open
  builtins.open = io.open = guarded_open

  class BlockImports:
    def find_spec(self, name, path=None, target=None):
      if name.partition(".")[0] in BLOCKED_MODULES:
        violate(f"import {name}")
      return None

  for name in list(sys.modules):
    if name.partition(".")[0] in BLOCKED_MODULES:
      del sys.modules[name]
  sys.meta_path.insert(0, BlockImports())


def _execute(source: str) -> tuple[str, str]:
  """(reason, detail) of running `source` as __main__."""
  try:
    code = compile(source, PROGRAM_FILE, "exec")
  except (SyntaxError, ValueError) as e:
    return "syntax", f"{type(e).__name__}: {e}"
  try:
    exec(code, {"__name__": "__main__", "__builtins__": builtins})
  except AssertionError as e:
    return "failed", f"AssertionError: {e}" if str(e) else "AssertionError"
  except MemoryError:
    return "memory", "MemoryError"
  except PermissionError as e:
    return ("forbidden" if str(e).startswith("sandbox:") else "error"), f"PermissionError: {e}"
  except SystemExit as e:
    return "error", f"exit({e.code!r}) before its end"
  except BaseException as e:  # noqa: BLE001 - whatever the program raised is its outcome
    return "error", f"{type(e).__name__}: {e}"
  return "passed", ""


def _worker_main(argv: list[str]) -> None:
  report_fd, limits = int(argv[0]), json.loads(argv[1])
  token = sys.stdin.readline().strip()
  os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
  report = os.fdopen(report_fd, "w", encoding="utf-8")
  exit_now, directory = os._exit, os.path.realpath(os.getcwd())
  _set_limits(limits)
  with open(PROGRAM_FILE, encoding="utf-8") as f:
    source = f.read()
  violations: list[str] = []
  if limits["python_guard"]:
    _install_guard(directory, violations)
  reason, detail = _execute(source)
  if violations:
    reason, detail = "forbidden", violations[0]
  sys.stdout.flush()
  sys.stderr.flush()
  report.write(f"{token} {reason} {' '.join(detail.split())[:DETAIL_CHARS]}\n")
  report.flush()
  exit_now(0)


if __name__ == "__main__":
  _worker_main(sys.argv[1:])
