"""XLA flags that scorejax sets before JAX opens a backend.

On CPU, XLA 0.10 lowers dots to YNNPACK fusions by default. On an x86 CPU
without AVX-512 (an AMD EPYC with AVX2), those ran the decode step of the 100M
bench model (batch 16, matrices of 768 x 768 to 768 x 32,000) at about 2 GB/s
of weights: 157 ms of a 160 ms step, where XLA's own Eigen dots took 49.5 ms
and the whole step 115 ms, with the train step no slower. On a Xeon with
AVX-512 the two are within 10% of each other (docs/benchmarks.md). So on x86
CPUs without AVX-512 scorejax turns YNNPACK's fusions off, unless the user
chose a YNNPACK setting in XLA_FLAGS, an accelerator plugin is installed (whose
XLA build may not know the flag, and whose host CPU does no model work), or
jaxlib is older than the 0.10 these figures were measured with (an XLA that does
not know a flag in XLA_FLAGS stops the process).
The flag acts only if it is set before the first JAX computation; a backend
already started keeps its flags.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type="
_MEASURED_JAXLIB = (0, 10)

# Packages whose presence means JAX may start a GPU or TPU backend.
_ACCELERATOR_PACKAGES = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin",
                         "jax_plugins", "libtpu")


def with_cpu_flags(xla_flags: str, ynnpack_is_slow: bool) -> str:
  """XLA_FLAGS with YNNPACK's fusions off where they are slow, unless the user set them."""
  if not ynnpack_is_slow or YNN_FLAG.rstrip("=") in xla_flags:
    return xla_flags
  return f"{xla_flags} {YNN_FLAG}".strip()


def x86_without_avx512(cpuinfo: str, machine: str) -> bool:
  """Whether /proc/cpuinfo's text describes an x86 CPU that lacks AVX-512 Foundation."""
  if machine.lower() not in ("x86_64", "amd64"):
    return False
  flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), None)
  return flags is not None and "avx512f" not in flags


def accelerator_installed() -> bool:
  if os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
    return False
  return any(importlib.util.find_spec(name) is not None for name in _ACCELERATOR_PACKAGES)


def knows_the_flag(jaxlib_version: str) -> bool:
  """Whether a jaxlib of this version is at least the one the flag was measured with."""
  major_minor = tuple(int(part) for part in re.findall(r"\d+", jaxlib_version)[:2])
  return major_minor >= _MEASURED_JAXLIB


def _jaxlib_version() -> str:
  try:
    return importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return "0"


def ynnpack_is_slow_here() -> bool:
  try:
    with open("/proc/cpuinfo") as f:
      cpuinfo = f.read()
  except OSError:  # not Linux: leave XLA's defaults
    return False
  return (x86_without_avx512(cpuinfo, platform.machine()) and knows_the_flag(_jaxlib_version())
          and not accelerator_installed())


def apply() -> None:
  os.environ["XLA_FLAGS"] = with_cpu_flags(os.environ.get("XLA_FLAGS", ""), ynnpack_is_slow_here())
