"""Faults: SIGKILL and SIGTERM mid-run, damaged checkpoints, non-finite losses, bad input,
two runs on one workdir. A resumed run must end exactly where an uninterrupted one does."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from distill_jax import cli, losses, sharding, train
from distill_jax.checkpoint import Checkpointer, load_export_params
from distill_jax.loop import fit
from tests.helpers import ROOT, SMOKE_ARGS as ARGS, command, fixed_batch, mlp, state_for


def _cmd(workdir, *extra):
  return [sys.executable, "-m", "distill_jax.main", *ARGS, f"--workdir={workdir}", *extra]


def _run(workdir, *extra):
  return command("main", *ARGS, f"--workdir={workdir}", *extra)


def _student(workdir):
  return load_export_params(os.path.join(workdir, "student", "export"), mlp((256, 256)),
                            fixed_batch(2))


def _assert_same_result(workdir, reference):
  ours, ref = (json.loads((w / "summary.json").read_text()) for w in (workdir, reference))
  for key in ("teacher", "student"):
    assert ours[key]["accuracy"] == ref[key]["accuracy"]
  assert ours["student"]["agreement"] == ref["student"]["agreement"]
  jax.tree.map(np.testing.assert_array_equal, _student(workdir), _student(reference))


@pytest.fixture(scope="module")
def reference(smoke_run):
  return smoke_run[0]


def _kill_when(workdir, condition, sig=signal.SIGKILL, timeout=300):
  """Start the run, send ``sig`` as soon as ``condition(workdir)`` holds; returns the process."""
  proc = subprocess.Popen(_cmd(workdir), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  start = time.time()
  while proc.poll() is None and time.time() - start < timeout:
    if condition(workdir):
      proc.send_signal(sig)
      break
    time.sleep(0.005)
  out, err = proc.communicate(timeout=timeout)
  return proc, out, err


def _metrics_lines(workdir, phase):
  try:
    with open(workdir / "metrics.jsonl") as f:
      return sum(f'"phase": "{phase}"' in line for line in f)
  except FileNotFoundError:
    return 0


def _writing_checkpoint(workdir):
  d = workdir / "student" / "checkpoints"
  return d.exists() and any("tmp" in p.name for p in d.iterdir())


def _kill_sequence(workdir) -> list[str]:
  """Kill the run mid-teacher, then (rerun) while Orbax writes a student checkpoint, then
  (rerun) mid-student; returns the kill points reached (a run may end before its kill)."""
  student_lines = lambda w: _metrics_lines(w, "student")
  kills = [("mid-teacher", lambda w: _metrics_lines(w, "teacher") >= 3),
           ("mid-checkpoint-write", _writing_checkpoint)]
  reached = []
  for where, condition in kills:
    proc, _, _ = _kill_when(workdir, condition)
    if proc.returncode != -signal.SIGKILL:
      return reached
    reached.append(where)
  start = student_lines(workdir)
  proc, _, _ = _kill_when(workdir, lambda w: student_lines(w) >= start + 2)
  return reached + (["mid-student"] if proc.returncode == -signal.SIGKILL else [])


def test_sigkill_anywhere_then_rerun_ends_like_an_uninterrupted_run(tmp_path, reference):
  """Each rerun resumes from the newest complete checkpoint (a half-written one is ignored);
  the last one ends exactly where the uninterrupted run ended."""
  for attempt in range(3):       # the kills race the run: try again, never skip
    workdir = tmp_path / f"attempt{attempt}"
    reached = _kill_sequence(workdir)
    if len(reached) == 3:
      break
  assert reached == ["mid-teacher", "mid-checkpoint-write", "mid-student"], reached
  out = _run(workdir)
  assert out.returncode == 0, out.stderr[-3000:]
  _assert_same_result(workdir, reference)


def test_sigint_and_sigterm_save_the_current_step_and_exit_cleanly(tmp_path, reference):
  """Ctrl-C mid-teacher, then (rerun) a preemption mid-student: each saves the step it was at
  and exits with 128 + the signal; the last rerun ends as the uninterrupted run."""
  for sig, phase in ((signal.SIGINT, "teacher"), (signal.SIGTERM, "student")):
    proc, _, err = _kill_when(tmp_path, lambda w, p=phase: _metrics_lines(w, p) >= 1, sig=sig)
    assert proc.returncode == 128 + sig, err[-2000:]
    assert f"{sig.name} received; saved a checkpoint at step" in err and "Traceback" not in err
    step = int(err.split("checkpoint at step ")[1].split()[0])
    assert Checkpointer(str(tmp_path / phase / "checkpoints")).latest_step() == step
  out = _run(tmp_path)
  assert out.returncode == 0, out.stderr[-3000:]
  _assert_same_result(tmp_path, reference)


def _damage_truncate(step_dir):
  for root, _, files in os.walk(step_dir / "params"):
    for name in files:
      if name != "commit_success.txt":
        open(os.path.join(root, name), "w").close()


def _damage_delete(step_dir):
  shutil.rmtree(step_dir / "params" / "d")


def _damage_structure(step_dir, other_step_dir):
  shutil.rmtree(step_dir / "params")
  shutil.copytree(other_step_dir / "params", step_dir / "params")


def test_damaged_checkpoints_are_set_aside_and_older_ones_used(tmp_path, reference):
  """The teacher's latest checkpoint holds another tree (the student's params), the
  student's latest has truncated files and its previous one missing files: the teacher
  resumes from its step 20, the student starts over, and the result is the same."""
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  teacher, student = workdir / "teacher" / "checkpoints", workdir / "student" / "checkpoints"
  _damage_structure(teacher / "30", student / "30")
  _damage_truncate(student / "30")
  _damage_delete(student / "20")
  listing = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*"))
  before = {d: listing(d) for d in (teacher / "30", student / "30", student / "20")}
  out = _run(workdir)
  assert out.returncode == 0, out.stderr[-3000:]
  for step_dir in before:
    assert f"checkpoint step {step_dir.name} in {step_dir.parent} is damaged" in out.stderr
    aside = step_dir.parent / "damaged" / step_dir.name
    assert listing(aside) == before[step_dir]               # kept untouched
  _assert_same_result(workdir, reference)


def test_restoring_into_a_model_of_another_shape_names_paths_and_shapes(tmp_path, reference):
  # On the command line the run manifest refuses the changed config first ...
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  out = _run(workdir, "--config.student.model.hidden=(128,128)",
             "--config.student.init.strategy=width")
  assert out.returncode == 2
  assert "student.model.hidden: [256, 256] -> [128, 128]" in out.stderr
  # ... and a checkpoint restored into a model of other shapes is an error naming them, with
  # nothing moved aside as damaged.
  directory = workdir / "student" / "checkpoints"
  with pytest.raises(ValueError, match=r"does not fit the model: Dense_0/bias: saved \(256,\) vs "
                                       r"model \(128,\)"):
    Checkpointer(str(directory)).restore(state_for(mlp((128, 128))))
  assert not (directory / "damaged").exists()


def test_a_nonfinite_loss_stops_at_its_step_and_writes_no_bad_checkpoint(tmp_path):
  model = mlp((16,))
  state = state_for(model)
  mesh = sharding.make_mesh()
  shardings = sharding.tree_shardings(state, sharding.REPLICATED, mesh)
  good = train.jit_train_step(train.make_train_step(model, losses.bind((("ce", 1.0),), "t")),
                              mesh, shardings)

  def poisoned(state, batch, teacher_params):   # the data turns to NaN at step 7
    if int(state.step) >= 6:
      batch = dict(batch, x=batch["x"] * np.nan)
    return good(state, batch, teacher_params)

  ckpt = Checkpointer(str(tmp_path))
  with pytest.raises(FloatingPointError, match=r"loss is nan at step 7; training stopped. No "
                                               r"checkpoint after step 5 was written"):
    fit(phase="t", state=state, step_fn=poisoned, batch_fn=lambda s: fixed_batch(16, seed=s),
        num_steps=20, mesh=mesh, state_shardings=shardings, checkpointer=ckpt,
        batch_size=16, log_every=10, checkpoint_every=5)
  ckpt.wait()
  assert ckpt.manager.all_steps() == [5]
  restored, _ = ckpt.restore(state_for(model))
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(restored.params))


def _npz(tmp_path, name, **arrays):
  path = tmp_path / name
  np.savez(path, **arrays)
  return f"--config.data.path={path}"


def _listing(workdir):
  return sorted((str(p.relative_to(workdir)), p.stat().st_mtime_ns) for p in workdir.rglob("*"))


@pytest.mark.parametrize("case", ["unknown key", "wrong type", "labels out of range",
                                  "shapes do not fit", "empty dataset", "missing teacher",
                                  "rule claims nothing", "impossible target"])
def test_bad_input_is_one_clear_line_and_leaves_the_workdir_alone(tmp_path, reference, case):
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  before = _listing(workdir)
  x = np.zeros((20, 64), np.float32)
  args, expected = {
      "unknown key": (["--config.distil.alpha=0.5"], "unknown config key 'distil'"),
      "wrong type": (["--config.batch_size=sixty"], "flag --config.batch_size=sixty"),
      "labels out of range": (["--config.data.source=npz", "--config.data.num_classes=10",
                               _npz(tmp_path, "l.npz", x=x, y=np.arange(20))],
                              "labels range over [0, 1"),
      "shapes do not fit": (["--config.data.source=npz", _npz(
                                 tmp_path, "s.npz", x=np.zeros((20, 100), np.float32),
                                 y=np.arange(20) % 10),
                             f"--config.teacher.load={reference}/teacher/export"],
                            "does not fit the model: Dense_0/kernel: saved (64, 256) vs "
                            "model (100, 256)"),
      "empty dataset": (["--config.data.source=npz", _npz(tmp_path, "e.npz", x=x[:0],
                                                          y=np.zeros(0, int))],
                        "holds 0 examples"),
      "missing teacher": (["--config.teacher.load=/nonexistent/teacher"],
                          "teacher.load='/nonexistent/teacher': neither an export directory"),
      "rule claims nothing": (['--config.student.init.rules=(("regex", "Dnse_0/.*", "stem"),'
                               ' ("depth", r"Dense_(\\d+)"))'],
                              "partition rule 0 (regex('Dnse_0/.*', 'stem')) matches no "
                              "parameter"),
      "impossible target": (["--config.student.init.select.layers=(0,3,5,9)"],
                            "but the student has 3 layers"),
  }[case]
  out = _run(workdir, *args)
  assert out.returncode == 2, out.stderr[-2000:]
  lines = [l for l in out.stderr.splitlines() if l.startswith("FATAL")]
  assert len(lines) == 1 and expected in lines[0], out.stderr[-2000:]
  assert "Traceback" not in out.stderr
  assert _listing(workdir) == before


def test_a_second_run_on_a_busy_workdir_refuses(tmp_path):
  with cli.workdir_lock(str(tmp_path)):
    out = _run(tmp_path)
  assert out.returncode == 2
  assert f"workdir {tmp_path} is in use by another run (pid {os.getpid()}" in out.stderr
  assert not (tmp_path / "teacher").exists()
