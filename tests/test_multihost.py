"""The same distillation as 2 processes (multi-controller JAX, CPU collectives over loopback)
and as 1 process: same loss curve, same final parameters."""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np

from distill_jax.checkpoint import load_export_params
from tests.helpers import ROOT, fixed_batch, mlp

ARGS = ["--config=configs/digits_mlp10_to3.py:smoke", "--config.baseline.enabled=False",
        "--config.teacher.steps=20", "--config.student.steps=20", "--config.log_every=5",
        "--config.checkpoint_every=10"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(workdir, extra=(), env=None):
  return subprocess.Popen([sys.executable, "-m", "distill_jax.main", *ARGS, f"--workdir={workdir}",
                           *extra], cwd=ROOT, env=dict(os.environ, **(env or {})),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc):
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out[-3000:]


def _losses(workdir, split="train"):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [(r["phase"], r["step"], r["loss"]) for r in map(json.loads, f) if r["split"] == split]


def _params(workdir, phase, hidden):
  return load_export_params(os.path.join(workdir, phase, "export"), mlp(hidden), fixed_batch(2))


def test_two_processes_match_one_process(tmp_path):
  port = _free_port()
  procs = [_launch(tmp_path / "two", [f"--config.distributed.coordinator_address=127.0.0.1:{port}",
                                      "--config.distributed.num_processes=2",
                                      f"--config.distributed.process_id={i}",
                                      "--config.distributed.cpu_collectives=gloo",
                                      "--config.distributed.timeout=120"])
           for i in range(2)]
  for p in procs:
    _finish(p)
  # one process with the same two-device mesh (one device against eight: test_train.py)
  _finish(_launch(tmp_path / "one", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}))

  two, one = (_losses(tmp_path / n) for n in ("two", "one"))
  assert [s[:2] for s in two] == [s[:2] for s in one] and len(two) == 8
  np.testing.assert_allclose([l for *_, l in two], [l for *_, l in one], rtol=1e-6)
  # held-out evaluations (every process predicts its share, all see all logits) agree too
  evals_two, evals_one = _losses(tmp_path / "two", "eval"), _losses(tmp_path / "one", "eval")
  assert len(evals_two) == 2
  np.testing.assert_allclose([l for *_, l in evals_two], [l for *_, l in evals_one], rtol=1e-6)
  for phase, hidden in (("teacher", (256,) * 9), ("student", (256, 256))):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 _params(tmp_path / "two", phase, hidden), _params(tmp_path / "one", phase, hidden))
  summary = json.loads((tmp_path / "two" / "summary.json").read_text())
  assert summary["student"]["params"] == 85002
