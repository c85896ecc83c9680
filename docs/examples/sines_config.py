r"""A 4-layer MLP regressor distilled into a 2-layer one, on the task of sines_task.py.

  python -m distill_jax.main --config=docs/examples/sines_config.py --workdir=runs/sines
"""
import os
import sys

import ml_collections

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sines_task  # noqa: E402,F401  (registers the task and its terms)

from distill_jax.config import defaults  # noqa: E402


def get_config(arg=None) -> ml_collections.ConfigDict:
  c = defaults()
  c.task, c.data.source = "sines", "sines"
  c.batch_size, c.checkpoint_every, c.eval_every = 50, 200, 200
  c.teacher.model = ml_collections.ConfigDict(dict(name="mlp", hidden=(64, 64, 64)))
  c.teacher.steps, c.teacher.learning_rate = 1500, 3e-3
  c.teacher.terms = (("target_mse", 1.0, {}),)
  c.baseline.enabled, c.baseline.terms = True, (("target_mse", 1.0, {}),)
  c.student.model = ml_collections.ConfigDict(dict(name="mlp", hidden=(16,)))
  c.student.steps, c.student.learning_rate = 1000, 3e-3
  c.student.init.strategy, c.student.init.rules = "random", (("regex", ".*", "all"),)
  c.distill.terms = (("match_teacher", 1.0, {}), ("target_mse", 0.1, {}))
  if arg == "smoke":
    c.teacher.steps, c.student.steps, c.checkpoint_every, c.eval_every = 300, 200, 100, 100
  return c
