"""Small shared builders for the tests (no fixtures with hidden state)."""
import os
import subprocess
import sys

import jax
import numpy as np

from distill_jax import models, train
from distill_jax.config import defaults
from distill_jax.data import Dataset
from distill_jax.tasks.classification import as_task_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The smoke digits job the CLI tests run (30 teacher, baseline and student steps).
SMOKE_ARGS = ("--config=configs/digits_mlp10_to3.py:smoke", "--config.teacher.steps=30",
              "--config.student.steps=30", "--config.log_every=5", "--config.checkpoint_every=10")


def build(num_classes=10, **model_config):
  return models.build(model_config, {"num_classes": num_classes})


def mlp(hidden, num_classes=10):
  return build(num_classes, name="mlp", hidden=tuple(hidden))


def init_params(model, input_shape, rng):
  """A model's fresh params for inputs of ``input_shape`` (without the batch axis)."""
  return model.init(rng, {"x": np.zeros((1,) + tuple(input_shape), np.float32)})


def state_for(model, input_dim=64, lr=1e-2, steps=100, seed=0):
  params = init_params(model, (input_dim,), jax.random.PRNGKey(seed))
  return train.TrainState.create(params, train.make_optimizer(lr, steps),
                                 jax.random.PRNGKey(seed + 1))


def fixed_batch(n=32, input_dim=64, num_classes=10, seed=0):
  rng = np.random.default_rng(seed)
  return {"x": rng.normal(size=(n, input_dim)).astype(np.float32),
          "y": rng.integers(0, num_classes, n).astype(np.int32)}


def toy_data(n_train=80, n_test=8, input_dim=64, num_classes=10, seed=0):
  """Random classification TaskData (the runner's input)."""
  rng = np.random.default_rng(seed)
  return as_task_data(Dataset("toy", rng.normal(size=(n_train, input_dim)).astype(np.float32),
                              rng.integers(0, num_classes, n_train).astype(np.int32),
                              rng.normal(size=(n_test, input_dim)).astype(np.float32),
                              rng.integers(0, num_classes, n_test).astype(np.int32),
                              num_classes), {"source": "toy"})


def toy_config(**overrides):
  """The schema's defaults with a few settings for fast runs."""
  c = defaults()
  c.log_every, c.checkpoint_every = 2, 5
  for dotted, value in overrides.items():
    node = c
    *parents, leaf = dotted.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def command(module: str, *args: str, timeout: int = 600):
  """Run ``python -m distill_jax.<module> ARGS`` at the repo root; returns the finished process."""
  return subprocess.run([sys.executable, "-m", f"distill_jax.{module}", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)


def run_python(code: str, env_extra: dict | None = None, timeout: int = 300):
  """Run ``code`` in a fresh interpreter at the repo root (e.g. with other XLA flags)."""
  env = dict(os.environ, **(env_extra or {}))
  return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)
