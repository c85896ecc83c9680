"""Orbax checkpoints of a training phase: params, optimizer state, step, key, data position.

Params are their own Orbax item so a later run (or another project) can restore just the
weights, e.g. a teacher: ``restore_params(dir, template)``. Restores always go through an
abstract target (shapes, dtypes, shardings), which is what keeps optax's state types intact.
"""
import logging
import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from distill_jax.train import TrainState


def _abstract(tree: Any) -> Any:
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
  """A ``CheckpointManager`` in ``directory`` that saves and restores a :class:`TrainState`."""

  def __init__(self, directory: str, max_to_keep: int = 2, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=async_save))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, state: TrainState, meta: dict) -> None:
    step = int(jax.device_get(state.step))
    self.manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state.params),
        train=ocp.args.StandardSave({"opt_state": state.opt_state, "step": state.step,
                                     "rng": state.rng}),
        meta=ocp.args.JsonSave(dict(meta, step=step))), force=True)

  def restore(self, template: TrainState) -> Optional[tuple[TrainState, dict]]:
    """Restore the newest checkpoint into ``template``'s structure, or None if there is none."""
    step = self.latest_step()
    if step is None:
      return None
    train = {"opt_state": template.opt_state, "step": template.step, "rng": template.rng}
    restored = self.manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(_abstract(template.params)),
        train=ocp.args.StandardRestore(_abstract(train)),
        meta=ocp.args.JsonRestore()))
    state = template.replace(params=restored.params, **restored.train)
    logging.info("restored %s step %d", self.directory, step)
    return state, dict(restored.meta)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def restore_params(directory: str, template: Any) -> Any:
  """The ``params`` item of the newest checkpoint in a distill_jax checkpoint directory."""
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"teacher.checkpoint: checkpoint directory {directory!r} does not exist")
  manager = ocp.CheckpointManager(os.path.abspath(directory))
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"teacher.checkpoint: no checkpoint found in {directory!r}")
  restored = manager.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(_abstract(template))))
  manager.close()
  return restored.params
