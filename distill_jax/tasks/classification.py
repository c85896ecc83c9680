"""Image and array classification: digits, npz, TFDS, MNIST-1D; MLP, CNN, GRU and any model
with ``logits``. Held-out metrics: loss, accuracy and top-1 agreement with the teacher."""
from typing import Any

import numpy as np

from distill_jax import data as data_lib
from distill_jax import losses, train
from distill_jax.errors import InputError
from distill_jax.paths import fingerprint
from distill_jax.tasks import TASKS, Task, TaskData


def as_task_data(ds: data_lib.Dataset, identity: dict) -> TaskData:
  return TaskData(ds.name, {"x": ds.x_train, "y": ds.y_train},
                  {"x": ds.x_test, "y": ds.y_test}, {"num_classes": ds.num_classes},
                  dict(identity, sha256=fingerprint([ds.x_train, ds.y_train, ds.x_test,
                                                     ds.y_test])),
                  example={"x": ds.x_train[:2], "y": ds.y_train[:2]}, mixup_keys=("x",))


def logits_of(model, params: Any, x: np.ndarray, mesh, config) -> np.ndarray:
  return train.predict(model, params, {"x": x}, mesh, config.eval_batch_size)["logits"]


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.mean(np.argmax(a, -1) == np.argmax(b, -1)))


def label_metrics(logits: np.ndarray, y: np.ndarray, reference=None) -> dict:
  """Held-out ``loss`` and ``accuracy`` of ``logits`` against labels ``y``; with the teacher's
  ``reference`` logits, also their top-1 ``agreement``."""
  metrics = {"loss": float(losses.cross_entropy(logits, y)),
             "accuracy": float(np.mean(np.argmax(logits, -1) == y))}
  if reference is not None:
    metrics["agreement"] = top1_agreement(logits, reference)
  return metrics


class Classification(Task):
  metric = "accuracy"

  def load(self, config) -> TaskData:
    d = config.data
    ds = data_lib.load(d)
    if not isinstance(ds, data_lib.Dataset):
      raise InputError(f"data.source={d.source!r} gives {type(ds).__name__}; the "
                       "classification task needs labelled arrays (digits, npz, tfds, mnist1d)")
    return as_task_data(ds, {"source": d.source, "name": d.name, "path": d.path,
                             "test_fraction": d.test_fraction, "split_seed": d.split_seed})

  def reference(self, model, params, data, mesh, config) -> np.ndarray:
    return logits_of(model, params, data.eval["x"], mesh, config)

  def evaluate(self, model, params, data, mesh, config, reference=None) -> dict:
    return label_metrics(logits_of(model, params, data.eval["x"], mesh, config),
                         data.eval["y"], reference)

  def agreement(self, student_outputs, teacher_outputs) -> float:
    return top1_agreement(student_outputs, teacher_outputs)

  def validation(self, data, fraction, seed) -> TaskData:
    x_tr, y_tr, x_val, y_val = data_lib.seeded_split(data.train["x"], data.train["y"],
                                                     fraction, seed)
    ds = data_lib.Dataset(f"{data.name}[val]", x_tr, y_tr, x_val, y_val,
                          data.info["num_classes"])
    return as_task_data(ds, dict(data.identity, validation=(fraction, seed)))


TASKS.register("classification")(Classification())
