"""Persistence: Orbax checkpoints of a phase (``<phase>/checkpoints/<step>/``: params, training
state, data position; restored through an abstract target) and the one export format
(``<phase>/export/``: ``model.json`` and ``params/``, plus a family's standard layout).
"""
import json
import logging
import os
import shutil
import sys
import time
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from distill_jax import sharding
from distill_jax.errors import InputError, MissingInput
from distill_jax.files import write_json
from distill_jax.paths import flatten

MODEL_FILE, PARAMS_DIR = "model.json", "params"


def abstract(tree: Any) -> Any:
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def check_shapes(saved: dict, wanted: dict, where: str) -> None:
  """Raise naming every path that is missing, extra or of another shape (``{path: shape}``)."""
  problems = [f"{k}: missing" for k in sorted(set(wanted) - set(saved))]
  problems += [f"{k}: not a parameter of the model" for k in sorted(set(saved) - set(wanted))]
  problems += [f"{k}: saved {saved[k]} vs model {wanted[k]}" for k in sorted(wanted)
               if k in saved and tuple(saved[k]) != tuple(wanted[k])]
  if problems:
    raise InputError(f"{where} does not fit the model: " + "; ".join(problems) + ". Use the "
                     "config it was written with, or another workdir.")


def shapes(tree: Any) -> dict:
  return {k: tuple(np.shape(v)) for k, v in flatten(tree).items() if hasattr(v, "shape")}


def _saved_shapes(read_metadata) -> Optional[dict]:
  """``{path: shape}`` from Orbax item metadata, None when it cannot be read."""
  try:
    metadata = read_metadata()
    tree = getattr(metadata, "item_metadata", None) or getattr(metadata, "tree", None) or metadata
    return shapes(dict(tree))
  except Exception:   # unreadable metadata: the restore will find the damage and report it
    return None


class Checkpointer:
  """A ``CheckpointManager`` in ``directory`` that saves and restores a ``TrainState``."""

  def __init__(self, directory: str, max_to_keep: int = 2, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    try:    # an unwritable directory fails now, not in Orbax's background threads
      os.makedirs(self.directory, exist_ok=True)
      probe = os.path.join(self.directory, f".write_test.{os.getpid()}")
      open(probe, "w").close()
      os.remove(probe)
    except OSError as e:
      raise InputError(f"checkpoint directory {self.directory} cannot be written: "
                       f"{e.strerror}") from None
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

  @staticmethod
  def _train_item(state) -> dict:
    return {"opt_state": state.opt_state, "step": state.step, "rng": state.rng,
            "projections": state.projections}

  def save(self, state, meta: dict) -> None:
    step = int(jax.device_get(state.step))
    try:
      self.manager.save(step, args=ocp.args.Composite(
          params=ocp.args.StandardSave(state.params),
          train=ocp.args.StandardSave(self._train_item(state)),
          meta=ocp.args.JsonSave(dict(meta, step=step))), force=True)
    except OSError as e:
      raise InputError(f"checkpoint step {step} cannot be written to {self.directory}: "
                       f"{e.strerror}") from None

  def restore(self, template) -> Optional[tuple[Any, dict]]:
    """The newest good checkpoint restored into ``template``'s structure (None: none). One
    that cannot be read is moved aside untouched to ``<dir>/damaged/<step>`` and the previous
    one tried; one of the same paths but other shapes is an error naming them (nothing moved)."""
    for step in sorted(self.manager.all_steps(), reverse=True):
      saved = _saved_shapes(lambda: self.manager.item_metadata(step)["params"])
      wanted = shapes(template.params)
      if saved is not None and set(saved) == set(wanted):
        check_shapes(saved, wanted, f"checkpoint step {step} in {self.directory}")
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract(template.params)),
            train=ocp.args.StandardRestore(abstract(self._train_item(template))),
            meta=ocp.args.JsonRestore()))
      except Exception as e:  # orbax/tensorstore raise many types for damaged files
        self._set_aside(step, e)
        continue
      state = template.replace(params=restored.params, **restored.train)
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
    try:
      self.manager.wait_until_finished()
    except OSError as e:       # an asynchronous write that failed
      raise InputError(f"a checkpoint in {self.directory} could not be written: "
                       f"{e.strerror}") from None

  def close(self) -> None:
    self.manager.close()


def save_export(directory: str, model, params: Any, info: dict, example: dict) -> str:
  """Write ``model.json`` and ``params/`` into ``directory`` (replacing an earlier export);
  ``info`` is what the data said (``num_classes``...), ``example`` a batch the model reads.
  Every process calls it (Orbax coordinates the hosts); process 0 writes the JSON."""
  directory = os.path.abspath(directory)
  check_shapes(shapes(params), shapes(jax.eval_shape(model.init, jax.random.PRNGKey(0), example)),
               f"params of {directory}")
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(directory, PARAMS_DIR), params, force=True)
  checkpointer.wait_until_finished()
  checkpointer.close()
  if jax.process_index() == 0:
    write_json(os.path.join(directory, MODEL_FILE), {"model": model.config, "info": dict(info)})
  return directory


def read_export_meta(directory: str) -> dict:
  """``{"model": {...}, "info": {...}}`` of an export directory."""
  path = os.path.join(directory, MODEL_FILE)
  if not os.path.isfile(path):
    raise MissingInput(f"{directory!r} is not an export: no {MODEL_FILE}")
  with open(path) as f:
    return json.load(f)


def load_export_params(directory: str, model, example: dict) -> Any:
  """The params of an export, restored into ``model``'s shapes (checked first)."""
  # Replicated over this machine's devices, whatever mesh the export was written from.
  where_to = sharding.replicated(sharding.make_mesh())
  target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=where_to),
                        jax.eval_shape(model.init, jax.random.PRNGKey(0), example))
  where = os.path.join(os.path.abspath(directory), PARAMS_DIR)
  if not os.path.isdir(where):
    raise MissingInput(f"export {directory!r} has no {PARAMS_DIR}/")
  checkpointer = ocp.StandardCheckpointer()
  saved = _saved_shapes(lambda: checkpointer.metadata(where))
  if saved is not None:
    check_shapes(saved, shapes(target), f"export {directory!r}")
  params = checkpointer.restore(where, target)
  checkpointer.close()
  return params
