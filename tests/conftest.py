"""Test-wide setup: eight fake CPU devices, so every sharding test runs anywhere.

The flag must be set before JAX is imported anywhere in the process.
"""

import os
import signal

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def keep_sigterm():
  """phases.PhaseRunner installs a SIGTERM handler; give pytest its own back after every test."""
  handler = signal.getsignal(signal.SIGTERM)
  yield
  signal.signal(signal.SIGTERM, handler)
