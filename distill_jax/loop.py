"""The training loop, the only Python loop over steps: resume, log every ``log_every`` steps
(which also keeps the host from queueing steps that can deadlock multi-device CPU collectives),
checkpoint asynchronously, build the next batch while the device runs the current step.
"""
import json
import os
import signal
import threading
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from distill_jax import sharding
from distill_jax.checkpoint import Checkpointer
from distill_jax.train import TrainState


class MetricsWriter:
  """Appends one JSON object per line to ``WORKDIR/metrics.jsonl`` and, given a directory,
  writes the same scalars as TensorBoard events to ``<dir>/<phase>/`` (process 0 only)."""

  def __init__(self, path: str, tensorboard_dir: Optional[str] = None):
    self.path = path
    self.tensorboard_dir = tensorboard_dir
    self._boards: dict = {}

  def write(self, record: dict) -> None:
    if jax.process_index() != 0:
      return
    with open(self.path, "a+b") as f:
      # One write per record; after a torn last line (a kill mid-write), start a new line.
      torn = f.seek(0, os.SEEK_END) > 0 and f.seek(-1, os.SEEK_END) >= 0 and f.read(1) != b"\n"
      f.write((("\n" if torn else "") + json.dumps(record) + "\n").encode())
    if self.tensorboard_dir:
      from tensorboard.compat.proto import event_pb2, summary_pb2
      phase = record["phase"]
      if phase not in self._boards:
        self._boards[phase] = _event_file(os.path.join(self.tensorboard_dir, phase))
      values = [summary_pb2.Summary.Value(tag=f"{record['split']}/{k}", simple_value=float(v))
                for k, v in record.items()
                if k not in ("phase", "step", "split", "time") and isinstance(v, (int, float))]
      self._boards[phase].write(event_pb2.Event(
          wall_time=time.time(), step=record["step"],
          summary=summary_pb2.Summary(value=values)).SerializeToString())
      self._boards[phase].flush()


def _event_file(directory: str):
  """A new TensorBoard event file in ``directory``, as TensorBoard's ``EventFileWriter`` names
  and starts it, written through a plain file. Why not ``EventFileWriter``: it opens files with
  ``tf.io.gfile``, which imports all of TensorFlow when it is installed (4-8 s a run here)."""
  import socket
  from tensorboard.compat.proto import event_pb2
  from tensorboard.summary.writer.record_writer import RecordWriter
  os.makedirs(directory, exist_ok=True)
  name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}."
          f"{len(os.listdir(directory))}")
  writer = RecordWriter(open(os.path.join(directory, name), "wb"))
  writer.write(event_pb2.Event(wall_time=time.time(),
                               file_version="brain.Event:2").SerializeToString())
  return writer


class Preempted(Exception):
  """SIGTERM or SIGINT arrived: a checkpoint of the current step was written; rerun to resume.
  ``exit_code``: 128 + the signal's number (143, 130), as a shell reports it."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.exit_code = 128 + signum


@jax.jit
def all_finite(tree: Any) -> jax.Array:
  return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


def fit(*, phase: str, state: TrainState, step_fn: Callable, batch_fn: Callable[[int], dict],
        num_steps: int, mesh, state_shardings: Any, checkpointer: Checkpointer,
        batch_size: int, teacher_params: Any = None, writer: Optional[MetricsWriter] = None,
        log_every: int = 10, checkpoint_every: int = 500,
        learning_rate_fn: Optional[Callable[[int], float]] = None,
        data_meta: Optional[Callable[[int], dict]] = None,
        check_meta: Optional[Callable[[dict], None]] = None,
        eval_fn: Optional[Callable[[Any], dict]] = None, eval_every: int = 0) -> TrainState:
  """Train ``state`` for ``num_steps`` total steps (resuming where a previous run stopped).

  ``batch_fn(step)`` returns this process's numpy batch for global step ``step``;
  ``eval_fn(params)`` (every ``eval_every`` steps and at the end) returns held-out metrics.
  ``data_meta(step)`` is saved with each checkpoint; ``check_meta(saved)`` vets it on resume.
  """
  state = sharding.place(state, state_shardings, copy=True)   # the step donates it
  restored = checkpointer.restore(state)
  if restored is not None:
    state, meta = restored
    if check_meta:        # e.g. a streamed run resumed with another seed: refused, not rerun
      check_meta(meta)
  start = int(jax.device_get(state.step))
  bar = tqdm(total=num_steps, initial=start, desc=phase, unit="step", mininterval=1.0,
             dynamic_ncols=True, disable=jax.process_index() != 0)
  last_time, last_step, last_saved = time.perf_counter(), start, start
  pending: list = []          # (step, loss on device) not yet checked for finiteness

  def check_finite(state):
    """Raise at the first non-finite loss since the last check, or on non-finite params."""
    for (s, _), loss in zip(pending, jax.device_get([l for _, l in pending])):
      if not np.isfinite(loss):
        raise FloatingPointError(
            f"{phase}: loss is {loss} at step {s}; training stopped. No checkpoint after step "
            f"{last_saved} was written; lower the learning rate or check the data.")
    pending.clear()
    if not bool(all_finite(state.params)):
      raise FloatingPointError(f"{phase}: parameters became non-finite before step "
                               f"{done}; no checkpoint after step {last_saved} was written.")

  stop = {}
  main_thread = threading.current_thread() is threading.main_thread()
  handled = (signal.SIGTERM, signal.SIGINT)     # preemption, Ctrl-C: both save, then stop
  previous = {s: signal.signal(s, lambda sig, _: stop.update(sig=sig)) for s in handled} \
      if main_thread else {}
  try:
    batch = sharding.shard_batch(batch_fn(start), mesh) if start < num_steps else None
    for step in range(start, num_steps):
      state, metrics = step_fn(state, batch, teacher_params)
      done = step + 1
      pending.append((done, metrics["loss"]))
      if done < num_steps:   # dispatch is asynchronous: build the next batch meanwhile
        batch = sharding.shard_batch(batch_fn(done), mesh)
      if done % log_every == 0 or done == num_steps:
        check_finite(state)
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        now = time.perf_counter()
        rate = (done - last_step) * batch_size / max(now - last_time, 1e-9)
        last_time, last_step = now, done
        if learning_rate_fn is not None:
          metrics["learning_rate"] = float(learning_rate_fn(step))
        bar.set_postfix(loss=f"{metrics['loss']:.4f}", ex_per_s=f"{rate:.0f}")
        if writer:
          writer.write({"phase": phase, "step": done, "split": "train", "time": time.time(),
                        "examples_per_sec": rate, **metrics})
      bar.update(1)
      if eval_fn and writer and ((eval_every and done % eval_every == 0) or done == num_steps):
        writer.write({"phase": phase, "step": done, "split": "eval", **eval_fn(state.params)})
      if done % checkpoint_every == 0 or done == num_steps or stop:
        check_finite(state)      # never write non-finite parameters
        checkpointer.save(state, data_meta(done) if data_meta else {})
        last_saved = done
      if stop:
        checkpointer.wait()
        raise Preempted(f"{phase}: {signal.Signals(stop['sig']).name} received; saved a "
                        f"checkpoint at step {done} in {checkpointer.directory}. Rerun the "
                        "same command to resume.", stop["sig"])
  finally:
    if main_thread:
      for s, handler in previous.items():
        signal.signal(s, handler)
    bar.close()
  checkpointer.wait()
  return state
