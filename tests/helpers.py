"""Small shared builders for the tests (no fixtures with hidden state)."""
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np

from distill_jax import models, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mlp(hidden, num_classes=10):
  return models.build(ml_collections.ConfigDict({"name": "mlp", "hidden": hidden}), num_classes)


def state_for(model, input_dim=64, lr=1e-2, steps=100, seed=0):
  params = train.init_params(model, (input_dim,), jax.random.PRNGKey(seed))
  return train.create_state(model, params, train.make_optimizer(lr, steps),
                            jax.random.PRNGKey(seed + 1))


def fixed_batch(n=32, input_dim=64, num_classes=10, seed=0):
  rng = np.random.default_rng(seed)
  return {"x": rng.normal(size=(n, input_dim)).astype(np.float32),
          "y": rng.integers(0, num_classes, n).astype(np.int32)}


def run_python(code: str, env_extra: dict | None = None, timeout: int = 300):
  """Run ``code`` in a fresh interpreter at the repo root (e.g. with other XLA flags)."""
  env = dict(os.environ, **(env_extra or {}))
  return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)
