"""Reliability, second round: a resume never mixes configs, every write is atomic, every input
is checked before anything is written, an unwritable checkpoint directory ends the run at once,
plan names cannot leave the workdir."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from distill_jax import manifest, plans
from distill_jax.checks import check
from distill_jax.config import apply_overrides, defaults, load
from distill_jax.data import Dataset
from distill_jax.errors import InputError
from tests.helpers import ROOT, SMOKE_ARGS, command


def _main(workdir, *extra):
  return command("main", *SMOKE_ARGS, f"--workdir={workdir}", *extra)


def _listing(workdir):
  """Every file and its modification time, but the lock (rewritten by every run)."""
  return sorted((str(p.relative_to(workdir)), p.stat().st_mtime_ns) for p in workdir.rglob("*")
                if p.name != ".lock")


def _fatal(out):
  lines = [l for l in out.stderr.splitlines() if l.startswith("FATAL")]
  assert out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
  return lines[0]


@pytest.fixture
def copy(smoke_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(smoke_run[0], workdir)
  return workdir


# --- a resume never mixes configs ---------------------------------------------------------------

def test_a_rerun_with_another_config_is_refused_before_anything_is_written(copy):
  before = _listing(copy)
  line = _fatal(_main(copy, "--config.student.steps=31", "--config.distill.terms="
                            '(("kd", 0.9, {"temperature": 2.0}), ("ce", 0.1, {}))'))
  assert "holds a run of another config/data/code" in line
  assert "student.steps: 30 -> 31" in line and "distill.terms" in line
  assert _listing(copy) == before


def test_fresh_moves_the_old_run_aside_and_starts_over(copy):
  old_summary = (copy / "summary.json").read_text()
  out = _main(copy, "--fresh", "--config.student.steps=20")
  assert out.returncode == 0, out.stderr[-3000:]
  previous, = (copy / "previous").iterdir()
  assert (previous / "summary.json").read_text() == old_summary           # kept, not deleted
  assert (previous / "student" / "checkpoints" / "30").is_dir()
  stored = json.loads((copy / "manifest.json").read_text())
  assert stored["config"]["student"]["steps"] == 20
  assert sorted(p.name for p in (copy / "student" / "checkpoints").iterdir()
                if p.name.isdigit()) == ["10", "20"]


def test_only_keys_that_cannot_change_results_may_be_allowed(copy):
  out = _main(copy, "--config.log_every=3", "--allow_changes=log_every")
  assert out.returncode == 0, out.stderr[-3000:]
  line = _fatal(_main(copy, "--config.student.learning_rate=0.1",
                      "--allow_changes=student.learning_rate"))
  assert "--allow_changes=student.learning_rate: these keys can change results" in line


def test_the_manifest_names_a_change_of_data_or_code(tmp_path):
  config = defaults()
  old = manifest.make("main", config, {"source": "npz", "path": "a.npz", "sha256": "1" * 64})
  (tmp_path / "checkpoints").mkdir()
  (tmp_path / "manifest.json").write_text(json.dumps(old))
  new = manifest.make("main", config, {"source": "npz", "path": "a.npz", "sha256": "2" * 64})
  with pytest.raises(InputError, match=r"data.sha256: \"1111.*\.\.\. -> \"2222"):
    manifest.compare(str(tmp_path), new, fresh=False, allow=())
  moved_code = dict(old, code="0" * 16)
  with pytest.raises(InputError, match="--allow_changes=code to resume with this code"):
    manifest.compare(str(tmp_path), moved_code, fresh=False, allow=())
  manifest.compare(str(tmp_path), moved_code, fresh=False, allow=("code",))
  manifest.compare(str(tmp_path), old, fresh=False, allow=())     # the same run: resumes


def test_a_plan_whose_inputs_changed_is_scored_again_from_scratch(tmp_path):
  calls = []

  def score(plan, directory):
    os.makedirs(directory, exist_ok=True)
    (tmp_path / "marker").write_text("x")
    open(os.path.join(directory, "checkpoint"), "w").write(str(len(calls)))
    calls.append(plan["name"])
    return {"accuracy": 0.5}

  plan = [{"name": "p"}]
  plans.run_plans(plan, score, str(tmp_path), lambda p: "key-steps-20")
  plans.run_plans(plan, score, str(tmp_path), lambda p: "key-steps-20")     # cached
  assert calls == ["p"]
  plans.run_plans(plan, score, str(tmp_path), lambda p: "key-steps-30")     # search.steps changed
  assert calls == ["p", "p"]
  previous, = (tmp_path / "p" / "previous").iterdir()
  assert (previous / "checkpoint").read_text() == "0"                       # the old run, kept


# --- every setting checked before anything is written -------------------------------------------

def _digits(**overrides):
  return apply_overrides(load(os.path.join(ROOT, "configs", "digits_mlp10_to3.py"), "smoke"),
                         overrides, "test")


@pytest.mark.parametrize("key,value,message", [
    ("batch_size", 0, "batch_size=0: must be an integer >= 1"),
    ("eval_batch_size", -4, "eval_batch_size=-4: must be an integer >= 1"),
    ("data.eval_max_tokens", 0, "data.eval_max_tokens=0: must be an integer >= 1"),
    ("micro_batches", 0, "micro_batches=0"),
    ("log_every", 0, "log_every=0"),
    ("checkpoint_every", 0, "checkpoint_every=0"),
    ("eval_every", -1, "eval_every=-1: must be an integer >= 0"),
    ("student.steps", 0, "student.steps=0"),
    ("teacher.steps", -5, "teacher.steps=-5"),
    ("student.learning_rate", 0.0, "student.learning_rate=0.0: must be a number > 0"),
    ("student.mixup", -1.0, "student.mixup=-1.0: must be a number >= 0"),
    ("distill.cache_topk", 0, "distill.cache_topk=0"),
    ("student.init.num_examples", 0, "student.init.num_examples=0"),
    ("distill.stage1.steps", -1, "distill.stage1.steps=-1"),
    ("search.steps", 0, "search.steps=0"),
    ("student.model.hidden", (0, 256), "student.model {'name': 'mlp', 'hidden': [0, 256], "
                                       "'dropout': 0.1} cannot be initialised"),
    ("distill.terms", (("kd", 0.9, {"temperature": -1.0}),), "'kd' option temperature=-1.0 "
                                                             "must be > 0"),
    ("distill.terms", (("kd", -1.0, {}),), "weight of 'kd' is -1.0"),
    ("distill.terms", (("dkd", 1.0, {"alpha": -1.0}),), "'dkd' option alpha=-1.0 must be >= 0"),
    ("student.init.rules", (("regex", "Dense_(", "x"),), "regex rule: 'Dense_(' is not a valid "
                                                          "regex"),
    ("search.plans", ({"name": "../../x"},), "plan name '../../x' must be"),
    ("sweep.variants", ({"name": "/abs"},), "plan name '/abs' must be"),
    ("search.plans", ({"name": "w", "student.model.hidden": (8, 8, 8, 8)},),
     "search.plans 'w': the plan keeps teacher layers [0, 5, 9] (3) but the student has 5"),
])
def test_every_setting_is_checked_before_anything_runs(key, value, message):
  with pytest.raises(InputError) as e:
    check(_digits(**{key: value}))
  assert message in str(e.value)


def test_inputs_must_be_finite_and_sts_scores_numbers(tmp_path):
  x = np.zeros((4, 2), np.float32)
  x[1, 1] = np.nan
  with pytest.raises(InputError, match="train inputs hold 1 non-finite values"):
    Dataset("d", x, np.zeros(4, np.int32), x[:1] * 0, np.zeros(1, np.int32), 2)
  from distill_jax.text.sts import read_sts_csv
  (tmp_path / "s.csv").write_text("g\tf\t2012\t1\tnan\tA.\tB.\n")
  with pytest.raises(InputError, match=r"s.csv:1: score 'nan' is not a finite number"):
    read_sts_csv(str(tmp_path / "s.csv"))


@pytest.mark.parametrize("case", ["truncated npz", "workdir is a file", "junk safetensors"])
def test_bad_files_are_one_line_naming_the_file(tmp_path, case):
  if case == "truncated npz":
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((40, 64), np.float32), y=np.arange(40) % 10)
    path.write_bytes(path.read_bytes()[:200])
    line = _fatal(_main(tmp_path / "w", "--config.data.source=npz", f"--config.data.path={path}"))
    assert f"npz file {str(path)!r} cannot be read" in line
  elif case == "workdir is a file":
    (tmp_path / "f").write_text("")
    assert f"--workdir={tmp_path / 'f'} exists and is not a directory" in _fatal(
        _main(tmp_path / "f"))
  else:
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "model.safetensors").write_bytes(b"junk" * 10)
    (tmp_path / "hf" / "config.json").write_text("{}")
    line = _fatal(command("evaluate", "--config=configs/minilm_l6_to_l3.py:smoke",
                          f"--model={tmp_path / 'hf'}"))
    assert "model.safetensors' is not a readable safetensors file" in line


# --- writes are atomic ------------------------------------------------------------------------

SLOW_JSON = """
import json, sys, time, runpy
def slow(real):
  def dump(obj, *args, **kwargs):
    if isinstance(obj, dict) and "wall_seconds" in obj:   # the summary, and only it
      print("WRITING", file=sys.stderr, flush=True)
      time.sleep(60)
    return real(obj, *args, **kwargs)
  return dump
json.dump, json.dumps = slow(json.dump), slow(json.dumps)
sys.argv = ["main"] + sys.argv[1:]
runpy.run_module("distill_jax.main", run_name="__main__")
"""


def test_a_kill_during_the_summary_write_leaves_the_old_summary(copy):
  """The rerun of a finished run writes only its summary (and exports); killed while it writes
  summary.json, the old one is still there, whole."""
  old = (copy / "summary.json").read_text()
  proc = subprocess.Popen([sys.executable, "-c", SLOW_JSON, *SMOKE_ARGS, f"--workdir={copy}"],
                          cwd=ROOT, stderr=subprocess.PIPE, text=True)
  for line in proc.stderr:
    if "WRITING" in line:
      break
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=60)
  assert (copy / "summary.json").read_text() == old


def test_metrics_records_are_whole_lines_even_after_a_torn_one(tmp_path):
  from distill_jax.loop import MetricsWriter
  path = tmp_path / "metrics.jsonl"
  writer = MetricsWriter(str(path))
  for step in (1, 2):
    writer.write({"phase": "t", "step": step, "split": "train", "loss": 1.0})
  with open(path, "a") as f:
    f.write('{"phase": "t", "st')                            # a kill mid-record
  writer.write({"phase": "t", "step": 3, "split": "train", "loss": 0.5})
  lines = path.read_text().splitlines()
  assert [json.loads(l)["step"] for l in lines[:2] + lines[3:]] == [1, 2, 3]
  assert lines[2] == '{"phase": "t", "st'


def test_a_torn_metrics_line_is_skipped_and_the_run_goes_on(copy):
  with open(copy / "metrics.jsonl", "a") as f:
    f.write('{"phase": "student", "step": 3')                 # a kill mid-record
  out = _main(copy)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "is not a whole record" in out.stderr
  assert command("report", f"--workdir={copy}").returncode == 0


# --- no hang on I/O errors -------------------------------------------------------------------

def test_an_unwritable_checkpoint_directory_ends_the_run_at_once(copy):
  shutil.rmtree(copy / "student" / "checkpoints")
  (copy / "student" / "checkpoints").write_text("")         # not a directory: cannot be written
  start = time.time()
  line = _fatal(_main(copy))
  assert time.time() - start < 30
  assert f"checkpoint directory {copy / 'student' / 'checkpoints'} cannot be written" in line
