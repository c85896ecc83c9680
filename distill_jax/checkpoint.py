"""Orbax checkpoints of a training phase: params, optimizer state, step, key, data position.

Params are their own Orbax item so a later run (or another project) can restore just the
weights, e.g. a teacher: ``restore_params(dir, template)``. Restores always go through an
abstract target (shapes, dtypes, shardings), which is what keeps optax's state types intact.
"""
import logging
import os
import shutil
import sys
import time
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from distill_jax import features
from distill_jax.paths import flatten
from distill_jax.train import TrainState


def _abstract(tree: Any) -> Any:
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _split(params: Any) -> tuple[Any, dict]:
  """(the student alone, extras): a feature projection is training state, not model weights,
  so it is saved with the optimizer state and the ``params`` item stays exportable."""
  student = features.student_params(params)
  return student, ({} if student is params else {"projection": params[features.PROJECTION]})


class Checkpointer:
  """A ``CheckpointManager`` in ``directory`` that saves and restores a :class:`TrainState`."""

  def __init__(self, directory: str, max_to_keep: int = 2, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    # Handlers named up front, so that item metadata (shapes) can be read before a restore.
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=async_save),
        item_handlers={"params": ocp.StandardCheckpointHandler(),
                       "train": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, state: TrainState, meta: dict) -> None:
    step = int(jax.device_get(state.step))
    student, extras = _split(state.params)
    self.manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(student),
        train=ocp.args.StandardSave({"opt_state": state.opt_state, "step": state.step,
                                     "rng": state.rng, **extras}),
        meta=ocp.args.JsonSave(dict(meta, step=step))), force=True)

  def restore(self, template: TrainState) -> Optional[tuple[TrainState, dict]]:
    """Restore the newest good checkpoint into ``template``'s structure (None if there is none).

    A checkpoint that cannot be read (truncated or missing files, a different tree structure)
    is reported, moved aside untouched to ``<dir>/damaged/<step>``, and the next older one is
    tried. A checkpoint of the same structure but other shapes means the config changed: that
    is an error naming the paths and shapes, and nothing is moved.
    """
    student, extras = _split(template.params)
    train = {"opt_state": template.opt_state, "step": template.step, "rng": template.rng,
             **extras}
    for step in sorted(self.manager.all_steps(), reverse=True):
      check_shapes(self.manager, step, student, self.directory)
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(_abstract(student)),
            train=ocp.args.StandardRestore(_abstract(train)),
            meta=ocp.args.JsonRestore()))
      except Exception as e:  # orbax/tensorstore raise many types for damaged files
        self._set_aside(step, e)
        continue
      saved = dict(restored.train)
      params = (features.wrap(restored.params, saved.pop("projection")) if extras
                else restored.params)
      state = template.replace(params=params, **saved)
      logging.info("restored %s step %d", self.directory, step)
      return state, dict(restored.meta)
    return None

  def _set_aside(self, step: int, error: Exception) -> None:
    aside = os.path.join(self.directory, "damaged", str(step))
    if os.path.exists(aside):
      aside += f".{int(time.time())}"
    os.makedirs(os.path.dirname(aside), exist_ok=True)
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    shutil.move(os.path.join(self.directory, str(step)), aside)
    self.manager.reload()
    message = (f"checkpoint step {step} in {self.directory} is damaged ({type(error).__name__}: "
               f"{reason}); moved it aside to {aside} and trying the previous one")
    logging.warning(message)
    print(message, file=sys.stderr)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def check_shapes(manager: ocp.CheckpointManager, step: int, template: Any, where: str) -> None:
  """Raise if checkpoint ``step``'s params have the template's paths but other shapes."""
  try:
    meta = manager.item_metadata(step)["params"]
  except Exception:   # unreadable metadata: the restore will find the damage and report it
    return
  if meta is None:
    return
  saved = {k: tuple(v.shape) for k, v in flatten(getattr(meta, "tree", meta)).items()
           if hasattr(v, "shape")}
  wanted = {k: tuple(np.shape(v)) for k, v in flatten(template).items()}
  if set(saved) != set(wanted):
    return            # another tree structure: treated as damage by the caller's restore
  wrong = {k: (saved[k], wanted[k]) for k in wanted if saved[k] != wanted[k]}
  if wrong:
    detail = "; ".join(f"{k}: checkpoint {a} vs model {b}" for k, (a, b) in sorted(wrong.items()))
    raise ValueError(f"checkpoint step {step} in {where} does not fit the model: {detail}. "
                     "Use the config the checkpoint was written with, or another workdir.")


def _params_manager(directory: str) -> tuple[ocp.CheckpointManager, int]:
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"teacher.checkpoint: checkpoint directory {directory!r} does not exist")
  manager = ocp.CheckpointManager(os.path.abspath(directory),
                                  item_handlers={"params": ocp.StandardCheckpointHandler()})
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"teacher.checkpoint: no checkpoint found in {directory!r}")
  return manager, step


def check_params(directory: str, template: Any) -> None:
  """Raise (naming paths and shapes) if the newest checkpoint's params do not fit ``template``."""
  manager, step = _params_manager(directory)
  check_shapes(manager, step, template, directory)
  manager.close()


def restore_params(directory: str, template: Any) -> Any:
  """The ``params`` item of the newest checkpoint in a distill_jax checkpoint directory."""
  manager, step = _params_manager(directory)
  check_shapes(manager, step, template, directory)
  restored = manager.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(_abstract(template))))
  manager.close()
  return restored.params
