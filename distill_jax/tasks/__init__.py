"""Tasks: what is specific to a model family (data, evaluators, pretrained models, export
extras), and nothing else; the runner does the rest. See docs/extending.md.
"""
import abc
import dataclasses
from typing import Any, Callable, Mapping, Optional

import numpy as np

from distill_jax.errors import InputError
from distill_jax.registry import Registry


@dataclasses.dataclass(frozen=True)
class TaskData:
  """A task's data. ``train``: arrays with one row per example (the batch keys the models
  read, labels ``y`` if any); ``eval``: the held-out set in the task's own form; ``info``:
  what model builders and exports need (``num_classes``, a tokenizer file...); ``identity``:
  what the data is (source, path, content hash) for run manifests and caches; ``example``: a
  small batch the models read (for initialisation and shape checks)."""
  name: str
  train: Mapping[str, np.ndarray]
  eval: Any
  info: Mapping[str, Any]
  identity: Mapping[str, Any]
  example: Mapping[str, np.ndarray]
  mixup_keys: tuple = ()               # float inputs that mixup may mix
  prepare: Callable[[dict], dict] = lambda batch: batch   # per batch (e.g. cut padding)
  # Streamed data: a random-access training source (``len``, ``[i]`` -> one example's arrays;
  # distill_jax/data/streaming.py) read batch by batch; ``train`` is then empty.
  source: Any = None
  # Streamed data: the per-example preprocessing of rows read by :meth:`rows` (the held-out
  # one, e.g. a centre crop: calibration rows are read as at inference, deterministically).
  row_transform: Optional[Callable] = None
  # Rows only a teacher can teach (True: an unlabelled augmented copy, Tang et al.'s transfer
  # set); phases whose terms read no teacher train on the other rows.
  teacher_only: Optional[np.ndarray] = None

  @property
  def num_train(self) -> int:
    if self.source is not None:
      return len(self.source)
    return len(next(iter(self.train.values()))) if self.train else 0

  def rows(self, idx: np.ndarray, arrays: Optional[Mapping[str, np.ndarray]] = None) -> dict:
    """The prepared batch of training rows ``idx`` (of ``arrays``, default ``train``; streamed
    data: read from its source, e.g. calibration rows for a data-driven initialisation)."""
    if arrays is None and self.source is not None:
      from distill_jax.data.streaming import read_rows
      return self.prepare(read_rows(self.source, np.arange(len(self.source))[idx],
                                    self.row_transform))
    return self.prepare({k: v[idx] for k, v in (arrays or self.train).items()})


class Task(abc.ABC):
  """Base class: a task must define :meth:`load` and :meth:`evaluate` and overrides what else
  differs; ``metric`` names the held-out metric summaries and searches rank by (higher is
  better)."""
  metric = "accuracy"

  @abc.abstractmethod
  def load(self, config) -> TaskData:
    """The task's data for ``config``."""

  def check(self, config, data: TaskData) -> None:
    """Task-specific config checks, before anything is written."""

  def reference(self, model, params: Any, data: TaskData, mesh, config) -> Any:
    """What :meth:`evaluate` compares students with (e.g. the teacher's held-out outputs)."""

  @abc.abstractmethod
  def evaluate(self, model, params: Any, data: TaskData, mesh, config,
               reference: Any = None) -> dict:
    """Held-out metrics of ``model`` (with ``reference``: also how it agrees with it)."""

  agreement_output = "logits"      # what agreement compares

  def tokens_per_example(self, data: TaskData) -> int:
    """Tokens in one training example, for throughput in tokens/s (0: not counted)."""
    return 0

  def agreement(self, student_outputs: np.ndarray, teacher_outputs: np.ndarray) -> float:
    """Label-free: how closely the student follows the teacher (their ``agreement_output`` on
    the same training inputs)."""
    raise InputError(f"task {type(self).__name__} has no label-free agreement score")

  def sampler(self, model, config) -> Callable:
    """On-policy distillation: ``resample(params, batch, rng) -> batch``, the batch replaced
    by what ``model`` generates from it (``distill.on_policy``)."""
    raise InputError(f"distill.on_policy.fraction > 0: task {type(self).__name__} cannot "
                     "generate training data from its student")

  def validation(self, data: TaskData, fraction: float, seed: int) -> TaskData:
    """The data with a validation split carved from its training data as the held-out set."""
    raise InputError(f"task {type(self).__name__} cannot carve a validation split")

  def pretrained(self, spec: str) -> Optional[tuple[dict, Any]]:
    """``(model config, params)`` of a pretrained model named ``spec`` this task knows how to
    read (a packaged model, a file layout), or None."""
    return None

  def export(self, directory: str, model, params: Any, data: TaskData, config) -> None:
    """Files a family adds to the common export (e.g. a standard weights layout)."""


TASKS: Registry[Task] = Registry("task")

# The built-in tasks register themselves.
from distill_jax.tasks import classification as _classification  # noqa: E402,F401
from distill_jax.tasks import sentence_embedding as _sentence_embedding  # noqa: E402,F401
from distill_jax.tasks import causal_lm as _causal_lm  # noqa: E402,F401
from distill_jax.tasks import node_classification as _node_classification  # noqa: E402,F401
from distill_jax.tasks import text_classification as _text_classification  # noqa: E402,F401
