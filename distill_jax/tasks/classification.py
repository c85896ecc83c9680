"""Image and array classification: digits, npz, TFDS, MNIST-1D; MLP, CNN, GRU and any model
with ``logits``. Held-out metrics: loss, accuracy and top-1 agreement with the teacher."""
import glob
from typing import Any

import numpy as np

from distill_jax import data as data_lib
from distill_jax import inference, losses
from distill_jax.data.feed import HeldOut
from distill_jax.errors import InputError, MissingInput
from distill_jax.paths import fingerprint
from distill_jax.tasks import TASKS, Task, TaskData


def as_task_data(ds: data_lib.Dataset, identity: dict) -> TaskData:
  return TaskData(ds.name, {"x": ds.x_train, "y": ds.y_train},
                  {"x": ds.x_test, "y": ds.y_test}, {"num_classes": ds.num_classes},
                  dict(identity, sha256=fingerprint([ds.x_train, ds.y_train, ds.x_test,
                                                     ds.y_test])),
                  example={"x": ds.x_train[:2], "y": ds.y_train[:2]}, mixup_keys=("x",))


def logits_of(model, params: Any, held_out: Any, mesh, config) -> np.ndarray:
  """Logits of the held-out inputs: arrays (``{"x": ...}``) or a streamed :class:`HeldOut`."""
  rows = held_out if isinstance(held_out, HeldOut) else {"x": held_out["x"]}
  return inference.predict(model, params, rows, mesh, config.eval_batch_size)["logits"]


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


def streams(data_config) -> bool:
  """Whether the data is read batch by batch through a stream (a record source, TFDS with
  ``stream``, or host-side augmentation, which needs the stream's per-step random numbers)."""
  d = data_config
  return (d.source == "array_record" or bool(d.get("stream")) or bool(d.get("example_augment"))
          or bool(d.get("batch_augment")))


def record_files(pattern: str, key: str) -> list[str]:
  files = sorted(glob.glob(pattern)) if pattern else []
  if not files:
    raise MissingInput(f"{key}={pattern!r} matches no record files")
  return files


def streamed_task_data(d) -> TaskData:
  """A training source read batch by batch, and a held-out source read in order a batch at a
  time (:class:`HeldOut`; ``data.eval_example``: its per-example preprocessing, e.g. a centre
  crop)."""
  from distill_jax.data import augment, streaming
  if d.source == "array_record":
    train_source = streaming.ArrayRecordSource(record_files(d.path, "data.path"))
    held = streaming.ArrayRecordSource(record_files(d.eval_path, "data.eval_path"))
    if not d.num_classes:
      raise InputError("data.source='array_record' needs data.num_classes (the records are "
                       "not scanned for labels)")
    num_classes, identity = int(d.num_classes), {"path": d.path, "eval_path": d.eval_path}
  elif d.source == "tfds":
    train_source = streaming.tfds_source(d.name, "train", d.data_dir, d.download)
    held = streaming.tfds_source(d.name, d.eval_split, d.data_dir, d.download)
    num_classes = int(d.num_classes or train_source.num_classes)
    if not num_classes:
      raise InputError(f"TFDS dataset {d.name!r}: its label has no class count; set "
                       "data.num_classes")
    identity = {"name": d.name, "eval_split": d.eval_split}
  else:                # in-memory arrays through the same stream (for host augmentation)
    ds = data_lib.load(d)
    train_source = streaming.InMemorySource({"x": ds.x_train, "y": ds.y_train})
    held = streaming.InMemorySource({"x": ds.x_test, "y": ds.y_test})
    num_classes, identity = ds.num_classes, {"name": ds.name, "path": d.path,
                                             "test_fraction": d.test_fraction,
                                             "split_seed": d.split_seed}
  eval_example = augment.example_from_config(d.eval_example)
  held_out = HeldOut(held, eval_example)
  # Two training examples as the model will see them (after the per-example transform).
  example = streaming.read_rows(train_source, np.arange(2),
                                augment.example_from_config(d.example_augment))
  identity = dict(identity, source=d.source, records=len(train_source), held_out=len(held),
                  example_augment=list(d.example_augment), batch_augment=list(d.batch_augment),
                  eval_example=list(d.eval_example))
  return TaskData(d.name or d.source, {}, held_out, {"num_classes": num_classes}, identity,
                  example=example, mixup_keys=("x",), source=train_source,
                  row_transform=eval_example)


class Classification(Task):
  metric = "accuracy"

  def load(self, config) -> TaskData:
    d = config.data
    if streams(d):
      return streamed_task_data(d)
    ds = data_lib.load(d)
    if not isinstance(ds, data_lib.Dataset):
      raise InputError(f"data.source={d.source!r} gives {type(ds).__name__}; the "
                       "classification task needs labelled arrays (digits, npz, tfds, mnist1d)")
    return as_task_data(ds, {"source": d.source, "name": d.name, "path": d.path,
                             "test_fraction": d.test_fraction, "split_seed": d.split_seed})

  def reference(self, model, params, data, mesh, config) -> np.ndarray:
    return logits_of(model, params, data.eval, mesh, config)

  def evaluate(self, model, params, data, mesh, config, reference=None) -> dict:
    return label_metrics(logits_of(model, params, data.eval, mesh, config),
                         data.eval["y"], reference)

  def agreement(self, student_outputs, teacher_outputs) -> float:
    return top1_agreement(student_outputs, teacher_outputs)

  def validation(self, data, fraction, seed) -> TaskData:
    if data.source is not None:
      raise InputError("a validation split of streamed training data is not supported: hold "
                       "out records in their own files (data.eval_path) instead")
    x_tr, y_tr, x_val, y_val = data_lib.seeded_split(data.train["x"], data.train["y"],
                                                     fraction, seed)
    ds = data_lib.Dataset(f"{data.name}[val]", x_tr, y_tr, x_val, y_val,
                          data.info["num_classes"])
    return as_task_data(ds, dict(data.identity, validation=(fraction, seed)))


TASKS.register("classification")(Classification())
