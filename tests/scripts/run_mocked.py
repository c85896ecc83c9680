"""A run of a config on ``tfds.testing.mock_data`` (nothing downloaded), for tests that need
a separate process: ``run_mocked.py CONFIG ARG WORKDIR OVERRIDES_JSON [PHASE:STEP]``. With
PHASE:STEP the process SIGKILLs itself when that phase asks the stream for that step's batch
and the phase's newest checkpoint is on disk (Orbax writes it in the background): no
exception, no cleanup, what a preempted VM or the OOM killer does."""
import json
import os
import signal
import sys
import time

import tensorflow_datasets as tfds

from distill_jax import runner
from distill_jax.config import apply_overrides, load
from distill_jax.data import streaming
from distill_jax.main import run_job

MOCK = dict(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE)


def kill_at(workdir: str, phase: str, step: int) -> None:
  """SIGKILL this process when ``phase`` asks for the batch of ``step``, once a checkpoint of
  the phase is complete (a named step folder; one being written is ``*-tmp``)."""
  folder = os.path.join(workdir, phase, "checkpoints")

  batch, train_phase = streaming.Stream.batch, runner.train_phase
  current = {}

  def tagged(run, name, *args, **kwargs):
    current["phase"] = name
    return train_phase(run, name, *args, **kwargs)

  def batch_or_die(self, s):
    if s == step and current.get("phase") == phase:
      deadline = time.time() + 120
      while time.time() < deadline and not (os.path.isdir(folder) and any(
          n.isdigit() for n in os.listdir(folder))):
        time.sleep(0.05)
      os.kill(os.getpid(), signal.SIGKILL)
    return batch(self, s)

  runner.train_phase, streaming.Stream.batch = tagged, batch_or_die


def main(name: str, arg: str, workdir: str, overrides: str, kill: str = "") -> None:
  if kill:
    phase, step = kill.split(":")
    kill_at(workdir, phase, int(step))
  # JSON has no tuples; config fields holding sequences are tuples
  values = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(overrides).items()}
  config = apply_overrides(load(name, arg), values)
  with tfds.testing.mock_data(**MOCK):
    run_job(config, workdir)


if __name__ == "__main__":
  main(*sys.argv[1:])
