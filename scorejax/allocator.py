"""glibc malloc settings that keep XLA's large CPU buffers off fresh pages.

XLA's CPU runtime allocates the buffers of every computation with malloc.
glibc serves a request above its mmap threshold (32 MiB at most) from a fresh
mmap and unmaps it on free, so each such buffer is page-faulted in anew at
every step. On a 2-core Xeon, a jitted `x * 2` wrote a 42 MiB result at 9 GB/s
and a 31 MiB one at 43 GB/s; the built-in task's train step (batch 32 x 288
tokens, whose attention probabilities are 42 MiB a layer) took 0.76 s. With
every size served from glibc's heap, freed memory kept for reuse and one
arena (a thread's own arena holds at most 64 MiB and maps larger buffers
anyway), the same step takes 0.61 s. scorejax sets that at import (mallopt).

Only on Linux with glibc and only where JAX computes on the CPU (with a GPU or
TPU plugin installed the host does no model work), and never where the user
chose: glibc malloc tunables in GLIBC_TUNABLES or MALLOC_* variables, another
allocator in LD_PRELOAD, or SCOREJAX_MALLOC=system, which keeps glibc's
defaults. The cost is that the process keeps freed memory for reuse instead
of returning it (up to 2 GiB free at the heap's top), so its resident size
stays near its peak, as with PyTorch's caching allocator on a GPU.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

from scorejax.xla_flags import accelerator_installed

# mallopt's parameters (glibc's malloc.h) and the values scorejax sets.
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
SETTINGS = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1), (M_ARENA_MAX, 1))


def user_chose(environ) -> bool:
  """Whether the environment already decides malloc's behaviour (or asks to leave it)."""
  return (environ.get("SCOREJAX_MALLOC", "").strip().lower() == "system"
          or "glibc.malloc." in environ.get("GLIBC_TUNABLES", "")
          or any(name.startswith("MALLOC_") for name in environ)
          or "malloc" in environ.get("LD_PRELOAD", ""))  # jemalloc, tcmalloc, mimalloc


def applies_here(environ, system: str, libc: str, on_cpu: bool) -> bool:
  """Whether scorejax sets its malloc settings in a process with this environment, OS, C library and backend."""
  return system == "Linux" and libc == "glibc" and on_cpu and not user_chose(environ)


def apply() -> bool:
  """Sets SETTINGS with mallopt where `applies_here`; returns whether it did."""
  if not applies_here(os.environ, platform.system(), platform.libc_ver()[0], not accelerator_installed()):
    return False
  libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
  return all(libc.mallopt(param, value) == 1 for param, value in SETTINGS)
