"""Vision at scale: the CIFAR-100 and ImageNet configs run end to end on mocked TFDS data, a
streamed run that resumes exactly after a SIGKILL, two loopback hosts reading disjoint shards,
and the SGD recipe's learning rate and update by hand."""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds

from distill_jax import train
from distill_jax.checkpoint import load_export_params
from distill_jax.checks import check
from distill_jax.config import apply_overrides, load
from distill_jax.data import streaming
from distill_jax.errors import InputError
from distill_jax.main import run_job
from tests.helpers import ROOT

MOCK = dict(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE)
CONFIGS = [("cifar100.py", "resnet56_resnet20,smoke"), ("cifar100.py", "resnet32x4_resnet8x4,smoke"),
           ("cifar100.py", "wrn_40_2_wrn_16_2,smoke"), ("imagenet.py", "smoke")]


def _config(name, arg, **overrides):
  return apply_overrides(load(os.path.join(ROOT, "configs", name), arg), overrides)


# The smoke ImageNet run starts a narrower student from the teacher by channel selection
# (its calibration rows, images of many sizes, are read through the held-out crop).
E2E = {"resnet32x4_resnet8x4,smoke": {}, "wrn_40_2_wrn_16_2,smoke": {},
       "smoke": {"student.init.strategy": "channels",
                 "student.model.widths": (4, 8, 16, 32),
                 "student.model.stem_width": 4}}


@pytest.mark.parametrize("name,arg", CONFIGS[1:], ids=lambda v: v.split(",")[0])
def test_each_benchmark_config_runs_end_to_end_on_mocked_tfds(tmp_path, name, arg):
  # The pre-flight check (streamed data, both models' shapes, the student's initialisation, the
  # terms), then a few steps of each phase, evaluation and export; resnet56_resnet20 runs in
  # the kill test below.
  config = _config(name, arg, **E2E[arg])
  with tfds.testing.mock_data(**MOCK):
    checked = check(config)
    summary = run_job(config, str(tmp_path), checked)
  assert checked.data.info["num_classes"] == (1000 if name == "imagenet.py" else 100)
  assert checked.data.example["x"].shape[1:] == (32, 32, 3)
  for phase in ("teacher", "student"):
    assert 0.0 <= summary[phase]["accuracy"] <= 1.0 and np.isfinite(summary[phase]["loss"])
  accounting = json.loads((tmp_path / "accounting.json").read_text())
  assert accounting["strategy"] == config.student.init.strategy
  if config.student.init.strategy == "channels":
    assert accounting["new_params"] == 0 and accounting["channels"]["stage_3"] == "32/64"
  from distill_jax import models
  model = models.build(dict(config.student.model), checked.data.info)
  params = load_export_params(str(tmp_path / "student" / "export"), model,
                              {"x": np.zeros((1, 32, 32, 3), np.float32)})
  assert sum(np.size(v) for v in jax.tree.leaves(params)) == summary["student"]["params"]


def test_a_run_killed_mid_student_resumes_with_the_same_batches(tmp_path):
  # resnet56_resnet20's smoke run on mocked CIFAR-100 with crop + flip + mixup on the host and
  # SGD with a step schedule. A process SIGKILLs itself when the student asks for step 3 (its
  # newest checkpoint: step 2); the rerun must end with an uninterrupted run's parameters.
  overrides = {"data.batch_augment": ("crop:4", "flip", "mixup:0.5"), "teacher.steps": 2}
  config = _config("cifar100.py", "resnet56_resnet20,smoke", **overrides)
  with tfds.testing.mock_data(**MOCK):
    whole = run_job(config, str(tmp_path / "whole"))
  cut = tmp_path / "cut"
  killed = subprocess.run(
      [sys.executable, os.path.join(ROOT, "tests", "scripts", "run_mocked.py"),
       os.path.join(ROOT, "configs", "cifar100.py"), "resnet56_resnet20,smoke", str(cut),
       json.dumps(overrides), "student:3"],
      cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
      timeout=600)
  assert killed.returncode == -9, killed.stderr[-3000:]
  steps = sorted(int(p.name) for p in (cut / "student" / "checkpoints").iterdir()
                 if p.name.isdigit())
  assert steps == [2]
  meta = json.loads((cut / "student" / "checkpoints" / "2" / "meta" / "metadata").read_text())
  assert meta["data"]["step"] == 2 and meta["data"]["seed"] == 0
  assert not (cut / "student" / "export").exists()
  with tfds.testing.mock_data(**MOCK):
    resumed = run_job(config, str(cut))
  assert resumed["student"]["accuracy"] == whole["student"]["accuracy"]
  from distill_jax import models
  model = models.build(dict(config.student.model), {"num_classes": 100})
  example = {"x": np.zeros((2, 32, 32, 3), np.float32)}
  a, b = (load_export_params(str(tmp_path / w / "student" / "export"), model, example)
          for w in ("whole", "cut"))
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6), a, b)
  # batch-norm statistics were trained and saved: not the initial zeros / ones
  flat = {"/".join(k): v for k, v in __import__("flax").traverse_util.flatten_dict(a).items()}
  assert not np.allclose(flat["stem/bn/mean"], 0.0)


def _records(tmp_path, n=48, seed=0):
  rng = np.random.default_rng(seed)
  arrays = {"x": rng.random((n, 32, 32, 3), dtype=np.float32),
            "y": rng.integers(0, 100, n).astype(np.int32), "id": np.arange(n, dtype=np.int32)}
  train_files = streaming.write_array_record(str(tmp_path / "train"), arrays, 2)
  streaming.write_array_record(str(tmp_path / "test"), {k: v[:16] for k, v in arrays.items()}, 1)
  return train_files


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_loopback_hosts_read_disjoint_shards_of_the_records(tmp_path):
  files = _records(tmp_path, n=50)
  address, out = f"127.0.0.1:{_free_port()}", str(tmp_path / "ids")
  env = dict(os.environ, XLA_FLAGS="", PYTHONPATH=ROOT)
  procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "scripts", "read_shard.py"),
                             address, str(i), out, *files], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  for p in procs:
    log, _ = p.communicate(timeout=300)
    assert p.returncode == 0, log[-3000:]
  hosts = [json.loads(open(f"{out}.{i}.json").read()) for i in range(2)]
  assert [h["process_index"] for h in hosts] == [0, 1]
  a, b = (set(h["ids"]) for h in hosts)
  assert len(hosts[0]["ids"]) == len(a) == 24 and len(b) == 24   # 25 each, whole batches of 4
  assert not a & b and a | b <= set(range(50))


def test_step_schedule_and_sgd_match_pytorchs_multisteplr_and_sgd_by_hand():
  lr = train.learning_rate_schedule(0.05, 240, "steps", (150 / 240, 180 / 240), 0.1)
  assert [float(lr(s)) for s in (0, 149, 150, 179, 180, 239)] == pytest.approx(
      [0.05, 0.05, 0.005, 0.005, 0.0005, 0.0005])
  # a short phase puts two boundaries on one step: both decays apply there
  short = train.learning_rate_schedule(1.0, 4, "steps", (0.5, 0.6), 0.1)   # steps 2 and 2
  assert [float(short(s)) for s in (1, 2)] == pytest.approx([1.0, 0.01])
  # SGD, momentum 0.9, weight decay 0.5 (PyTorch: g += wd p; v = 0.9 v + g; p -= lr v)
  tx = train.make_optimizer(0.1, 100, weight_decay=0.5, optimizer="sgd", momentum=0.9,
                            schedule="constant")
  p, g = np.array([1.0, -2.0]), np.array([0.5, 0.25])
  params = (p, {})
  state = tx.init(params)
  want, v = p.copy(), np.zeros(2)
  for _ in range(2):
    updates, state = tx.update((g, {}), state, params)
    params = optax.apply_updates(params, updates)
    v = 0.9 * v + g + 0.5 * want
    want = want - 0.1 * v
    np.testing.assert_allclose(params[0], want, rtol=1e-6)
  for bad, match in ((dict(optimizer="lamb"), "unknown optimizer 'lamb'"),
                     (dict(schedule="steps"), r"needs boundaries.*got \(\)"),
                     (dict(schedule="steps", boundaries=(150,)), r"\(0, 1\]; got \(150,\)")):
    with pytest.raises(InputError, match=match):
      train.make_optimizer(0.1, 100, **bad)


def test_a_bad_optimizer_in_a_config_is_refused_before_anything_runs(tmp_path):
  config = _config("cifar100.py", "resnet56_resnet20,smoke", **{"student.optimizer": "lamb"})
  with tfds.testing.mock_data(**MOCK), pytest.raises(InputError,
                                                      match="student.optimizer.*'lamb'"):
    run_job(config, str(tmp_path / "w"))
  assert not (tmp_path / "w" / "teacher").exists()


def test_distill_cache_is_refused_for_streamed_data(tmp_path):
  _records(tmp_path)
  config = _config("cifar100.py", "resnet56_resnet20,smoke", **{
      "data.source": "array_record", "data.stream": False, "data.num_classes": 100,
      "data.path": str(tmp_path / "train-*"), "data.eval_path": str(tmp_path / "test-*"),
      "distill.cache": "full"})
  with pytest.raises(InputError, match="distill.cache='full' needs in-memory training arrays"):
    run_job(config, str(tmp_path / "w"))
  assert not (tmp_path / "w" / "teacher").exists()     # refused before the teacher trains
