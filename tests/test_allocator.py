"""scorejax keeps large CPU buffers on glibc's heap (mallopt at import), unless the user chose."""

import os
import platform
import subprocess
import sys

import pytest

from scorejax import allocator

# The bytes glibc holds in mmapped chunks after a 40 MiB allocation that is kept alive.
_MAPPED_BYTES = """
import ctypes, numpy as np
import scorejax
class Info(ctypes.Structure):
  _fields_ = [(name, ctypes.c_size_t) for name in
              ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
               "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
buffer = np.ones(10 * 2**20, np.float32)
print(libc.mallinfo2().hblkhd)
"""


def test_applies_on_linux_glibc_cpu_hosts_only():
  assert allocator.applies_here({}, "Linux", "glibc", on_cpu=True)
  assert not allocator.applies_here({}, "Darwin", "", on_cpu=True)
  assert not allocator.applies_here({}, "Linux", "", on_cpu=True)  # musl
  assert not allocator.applies_here({}, "Linux", "glibc", on_cpu=False)  # a GPU or TPU plugin is installed


@pytest.mark.parametrize("environ", [
    {"SCOREJAX_MALLOC": "system"},
    {"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"},
    {"MALLOC_ARENA_MAX": "2"},
    {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"},
])
def test_the_users_own_malloc_settings_are_left_alone(environ):
  assert allocator.user_chose(environ)
  assert not allocator.applies_here(environ, "Linux", "glibc", on_cpu=True)


def test_unrelated_settings_do_not_count_as_a_choice():
  assert not allocator.user_chose({"GLIBC_TUNABLES": "glibc.pthread.rseq=0", "LD_PRELOAD": "libfoo.so",
                                   "XLA_FLAGS": "--xla_force_host_platform_device_count=8"})


def _mapped_bytes(**env) -> int:
  environ = {k: v for k, v in os.environ.items() if k not in ("SCOREJAX_MALLOC", "GLIBC_TUNABLES", "LD_PRELOAD")
             and not k.startswith("MALLOC_")}
  environ.update(env, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", _MAPPED_BYTES], env=environ, capture_output=True, text=True, check=True)
  return int(out.stdout.split()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_importing_scorejax_keeps_a_40_mib_buffer_off_mmap():
  assert _mapped_bytes() < 2**20
  assert _mapped_bytes(SCOREJAX_MALLOC="system") >= 40 * 2**20  # glibc's default: a fresh mapping
