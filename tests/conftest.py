"""Test-session settings: JAX's persistent compilation cache, shared by the tests and the
commands they start, so the many runs of the same smoke configs compile once."""
import os
import tempfile

# Before anything imports jax (the tests' subprocesses inherit the environment).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="distill_jax_jit_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
# Token caches of the tests' texts go to a temporary folder, not ~/.cache.
os.environ.setdefault("DISTILL_JAX_CACHE", tempfile.mkdtemp(prefix="distill_jax_cache_"))


import pytest  # noqa: E402

from tests.helpers import SMOKE_ARGS, command  # noqa: E402


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
  """One finished run of the smoke digits job, shared by the tests that read or copy it."""
  workdir = tmp_path_factory.mktemp("smoke_run")
  out = command("main", *SMOKE_ARGS, f"--workdir={workdir}")
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir, out
