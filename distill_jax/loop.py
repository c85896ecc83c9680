"""The training loop: the only Python loop over steps. Everything inside a step is jitted.

``fit`` resumes from the phase's newest checkpoint, fetches metrics every ``log_every`` steps
(which also keeps the host from running far ahead of the devices: multi-device CPU
collectives can deadlock when dozens of steps are queued), and checkpoints every
``checkpoint_every`` steps and at the end.
"""
import json
import os
import time
from typing import Any, Callable, Optional

import jax
import numpy as np
from tqdm.auto import tqdm

from distill_jax import data as data_lib
from distill_jax.checkpoint import Checkpointer
from distill_jax.train import TrainState, replicate, shard_batch


class MetricsWriter:
  """Appends one JSON object per line to ``WORKDIR/metrics.jsonl``."""

  def __init__(self, path: str):
    self.path = path

  def write(self, record: dict) -> None:
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")


def fit(*, phase: str, state: TrainState, step_fn: Callable, dataset: data_lib.Dataset,
        batch_size: int, seed: int, num_steps: int, mesh, checkpointer: Checkpointer,
        teacher_params: Any = None, writer: Optional[MetricsWriter] = None,
        log_every: int = 10, checkpoint_every: int = 500,
        learning_rate_fn: Optional[Callable[[int], float]] = None) -> TrainState:
  """Train ``state`` for ``num_steps`` total steps (resuming where a previous run stopped)."""
  restored = checkpointer.restore(state)
  if restored is not None:
    state, _ = restored
  state = replicate(state, mesh, copy=True)  # the step donates it
  if teacher_params is not None:
    teacher_params = replicate(teacher_params, mesh)
  start = int(jax.device_get(state.step))
  per_epoch = data_lib.steps_per_epoch(len(dataset.x_train), batch_size)

  def meta(step: int) -> dict:
    epoch, index = divmod(step, per_epoch)
    return {"phase": phase, "data": {"seed": seed, "batch_size": batch_size, "epoch": epoch,
                                     "index_in_epoch": index}}

  bar = tqdm(total=num_steps, initial=start, desc=phase, unit="step", mininterval=1.0,
             dynamic_ncols=True)
  last_time, last_step = time.perf_counter(), start
  for step in range(start, num_steps):
    batch = shard_batch(data_lib.train_batch(dataset, batch_size, seed, step), mesh)
    state, metrics = step_fn(state, batch, teacher_params)
    done = step + 1
    if done % log_every == 0 or done == num_steps:
      metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
      if not np.isfinite(metrics["loss"]):
        raise FloatingPointError(f"{phase}: non-finite loss {metrics['loss']} at step {done}")
      now = time.perf_counter()
      rate = (done - last_step) * batch_size / max(now - last_time, 1e-9)
      last_time, last_step = now, done
      if learning_rate_fn is not None:
        metrics["learning_rate"] = float(learning_rate_fn(step))
      bar.set_postfix(loss=f"{metrics['loss']:.4f}", ex_per_s=f"{rate:.0f}")
      if writer:
        writer.write({"phase": phase, "step": done, "split": "train",
                      "examples_per_sec": rate, **metrics})
    bar.update(1)
    if done % checkpoint_every == 0 or done == num_steps:
      checkpointer.save(state, meta(done))
  bar.close()
  checkpointer.wait()
  return state
