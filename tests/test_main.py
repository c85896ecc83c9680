"""The CLI end to end on the smoke config: summary, resume, config errors."""
import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT

CONFIG = "--config=configs/digits_mlp10_to3.py:smoke"


def _main(*args):
  return subprocess.run([sys.executable, "-m", "distill_jax.main", CONFIG, *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)


def _train_lines(workdir):
  with open(workdir / "metrics.jsonl") as f:
    return [json.loads(line) for line in f if '"split": "train"' in line]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  out = _main(f"--workdir={workdir}")
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir, out


def test_main_writes_the_summary_with_the_promised_keys(finished_run):
  workdir, out = finished_run
  summary = json.loads((workdir / "summary.json").read_text())
  assert isinstance(summary["teacher"]["params"], int)
  assert isinstance(summary["student"]["params"], int)
  for key in ("teacher", "student", "baseline"):
    assert 0.0 <= summary[key]["accuracy"] <= 1.0
  assert 0.0 <= summary["student"]["agreement"] <= 1.0
  # 64-256x9-10 teacher and 64-256-256-10 student, counted by hand
  assert summary["teacher"]["params"] == (64 * 256 + 256) + 8 * (256 * 256 + 256) + 2570
  assert summary["student"]["params"] == (64 * 256 + 256) + (256 * 256 + 256) + 2570
  assert summary["compression"] == pytest.approx(summary["teacher"]["params"]
                                                 / summary["student"]["params"])
  assert "student distilled" in out.stdout and "compression" in out.stdout
  phases = {line["phase"] for line in _train_lines(workdir)}
  assert phases == {"teacher", "baseline", "student"}


def test_rerunning_the_same_command_resumes_instead_of_retraining(finished_run):
  workdir, _ = finished_run
  before = _train_lines(workdir)
  out = _main(f"--workdir={workdir}")
  assert out.returncode == 0, out.stderr[-3000:]
  assert _train_lines(workdir) == before          # every phase was already complete
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["student"]["params"] > 0


def test_unknown_config_key_is_named_with_a_suggestion(tmp_path):
  out = _main(f"--workdir={tmp_path}", "--config.student.init.stratgy=random")
  assert out.returncode == 2
  assert ("unknown config key 'stratgy' in --config.student.init.stratgy; "
          "did you mean 'strategy'?") in out.stderr
  assert "Traceback" not in out.stderr
  assert list(tmp_path.iterdir()) == []
