"""A task defined outside the package: regression of sum(sin(3 x)) from 4 inputs.

It brings its data, its held-out metric (R^2) and two loss terms; models, the train step,
checkpoints, exports, recombination and search come from distill_jax unchanged. The config
beside it (``sines_config.py``) imports this module, which registers the task and the terms.
"""
import jax.numpy as jnp
import numpy as np

from distill_jax import inference, losses
from distill_jax.paths import fingerprint
from distill_jax.tasks import TASKS, Task, TaskData


@losses.term("target_mse", reads=("logits",), teacher=False)
def target_mse(student, teacher, batch):
  """Mean squared error of the prediction against the regression target."""
  return jnp.mean(jnp.square(student["logits"][:, 0] - batch["target"]))


@losses.term("match_teacher", reads=("logits",))
def match_teacher(student, teacher, batch):
  """Mean squared difference between the student's and the teacher's predictions."""
  return jnp.mean(jnp.square(student["logits"] - teacher["logits"]))


class Sines(Task):
  metric = "r2"

  def load(self, config) -> TaskData:
    rng = np.random.default_rng(config.data.split_seed)
    x = rng.uniform(-1, 1, (1200, 4)).astype(np.float32)
    y = np.sin(3 * x).sum(1).astype(np.float32)
    train_rows, held_out = slice(0, 1000), slice(1000, None)
    return TaskData("sines", {"x": x[train_rows], "target": y[train_rows]},
                    {"x": x[held_out], "target": y[held_out]}, {"num_classes": 1},
                    {"source": "sines", "seed": config.data.split_seed,
                     "sha256": fingerprint([x, y])},
                    example={"x": x[:2], "target": y[:2]}, mixup_keys=("x",))

  def evaluate(self, model, params, data, mesh, config, reference=None) -> dict:
    pred = inference.predict(model, params, {"x": data.eval["x"]}, mesh,
                             config.eval_batch_size)["logits"][:, 0]
    y = data.eval["target"]
    return {"r2": float(1.0 - np.mean((pred - y) ** 2) / np.var(y))}


TASKS.register("sines")(Sines())
