"""scorejax turns YNNPACK's CPU fusions off at import on x86 CPUs without AVX-512, unless the user chose."""

import os
import subprocess
import sys

from scorejax import xla_flags

_AVX2 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
_AVX512 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512bw amx_bf16\n"

_COUNT_YNN = """
import scorejax, jax, jax.numpy as jnp
hlo = jax.jit(lambda a, b: a @ b).lower(jnp.ones((16, 768)), jnp.ones((768, 3072))).compile().as_text()
print(hlo.count("__ynn_fusion"))
"""


def test_flag_appended_to_the_users_flags_where_ynnpack_is_slow():
  flags = xla_flags.with_cpu_flags("--xla_force_host_platform_device_count=8", ynnpack_is_slow=True)
  assert flags == "--xla_force_host_platform_device_count=8 --xla_cpu_experimental_ynn_fusion_type="
  assert xla_flags.with_cpu_flags("", ynnpack_is_slow=True) == "--xla_cpu_experimental_ynn_fusion_type="
  assert xla_flags.with_cpu_flags("--a=1", ynnpack_is_slow=False) == "--a=1"


def test_users_own_ynn_setting_kept():
  own = "--a=1 --xla_cpu_experimental_ynn_fusion_type=individual_dot"
  assert xla_flags.with_cpu_flags(own, ynnpack_is_slow=True) == own


def test_which_cpus_get_the_flag():
  assert xla_flags.x86_without_avx512(_AVX2, "x86_64")
  assert not xla_flags.x86_without_avx512(_AVX512, "x86_64")
  assert not xla_flags.x86_without_avx512(_AVX2, "aarch64")
  assert not xla_flags.x86_without_avx512("processor\t: 0\n", "x86_64")  # no flags line: leave XLA's defaults

  assert xla_flags.knows_the_flag("0.10.2") and xla_flags.knows_the_flag("1.0")
  assert not xla_flags.knows_the_flag("0.9.1") and not xla_flags.knows_the_flag("0")


def _ynn_fusions(xla_flags_env: str) -> int:
  env = dict(os.environ, XLA_FLAGS=xla_flags_env, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", _COUNT_YNN], env=env, capture_output=True, text=True, check=True)
  return int(out.stdout.split()[-1])


def test_compiled_dots_follow_the_flag():
  assert _ynn_fusions("--xla_cpu_experimental_ynn_fusion_type=") == 0
  assert _ynn_fusions("--xla_cpu_experimental_ynn_fusion_type=individual_dot") == 1
  # With nothing set, this machine gets the flag exactly when its CPU is x86 without AVX-512.
  assert _ynn_fusions("") == (0 if xla_flags.ynnpack_is_slow_here() else 1)
