"""The CLI end to end on the smoke config: summary, resume, config errors."""
import json
import shutil

import pytest

from tests.helpers import SMOKE_ARGS, command

def _main(*args):
  return command("main", *SMOKE_ARGS, *args)


def _train_lines(workdir):
  with open(workdir / "metrics.jsonl") as f:
    return [json.loads(line) for line in f if '"split": "train"' in line]


@pytest.fixture(scope="module")
def finished_run(smoke_run):
  return smoke_run


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
  assert summary["student"]["at_init"]["accuracy"] < summary["student"]["accuracy"]
  assert (workdir / "student" / "export" / "model.json").exists()
  assert (workdir / "teacher" / "export" / "model.json").exists()
  phases = {line["phase"] for line in _train_lines(workdir)}
  assert phases == {"teacher", "baseline", "student"}


def test_rerunning_the_same_command_resumes_instead_of_retraining(finished_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(finished_run[0], workdir)
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


def test_the_run_writes_curves_tensorboard_events_and_a_report(finished_run):
  workdir, _ = finished_run
  assert (workdir / "curves.png").stat().st_size > 10_000
  from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
  for phase in ("teacher", "baseline", "student"):
    events, = (workdir / "tensorboard" / phase).glob("events.out.tfevents.*")
    scalars = {(v.tag, e.step): v.simple_value for e in LegacyEventFileLoader(str(events)).Load()
               for v in e.summary.value}
    last = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()
            if f'"phase": "{phase}"' in l and '"split": "train"' in l][-1]
    assert scalars[("train/loss", last["step"])] == pytest.approx(last["loss"], rel=1e-6)
  evals = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()
           if '"split": "eval"' in l]
  assert {e["phase"] for e in evals} == {"teacher", "baseline", "student"}
  summary = json.loads((workdir / "summary.json").read_text())
  last_student = [e for e in evals if e["phase"] == "student"][-1]
  assert last_student["accuracy"] == summary["student"]["accuracy"]
  out = command("report", f"--workdir={workdir}", timeout=120)
  assert out.returncode == 0, out.stderr
  assert f"{summary['student']['accuracy']:.4f}" in out.stdout
  assert "student distilled" in out.stdout


def test_report_summarises_an_interrupted_run(tmp_path, finished_run):
  from distill_jax import report
  partial = tmp_path / "partial"
  partial.mkdir()
  lines = [{"phase": "teacher", "step": 10, "split": "train", "loss": 1.0, "accuracy": 0.5},
           {"phase": "teacher", "step": 20, "split": "eval", "loss": 0.9, "accuracy": 0.7},
           {"phase": "teacher", "step": 20, "split": "train", "loss": 0.8, "accuracy": 0.6}]
  (partial / "metrics.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
  text = report.run_report(str(partial))
  assert "interrupted" in text and "teacher    step     20  held-out: loss 0.9000, accuracy 0.7000" in text
  assert "student distilled" in report.run_report(str(finished_run[0]))
  with pytest.raises(FileNotFoundError, match="neither summary.json nor metrics.jsonl"):
    report.run_report(str(tmp_path))
