"""A task, its terms and its config defined outside the package run through distill_jax.main
(the example of docs/extending.md)."""
import json

from tests.helpers import command


def test_a_task_defined_outside_the_package_runs_through_main(tmp_path):
  out = command("main", "--config=docs/examples/sines_config.py:smoke", f"--workdir={tmp_path}")
  assert out.returncode == 0, out.stderr[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["task"] == "sines" and summary["metric"] == "r2"
  assert summary["teacher"]["r2"] > 0.5
  assert summary["student"]["r2"] > summary["student"]["at_init"]["r2"] + 0.3
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  student = [r for r in records if r["phase"] == "student" and r["split"] == "train"]
  assert student and all("match_teacher" in r and "target_mse" in r for r in student)
  assert (tmp_path / "student" / "export" / "model.json").exists()
  assert "student distilled" in out.stdout and "r2" in out.stdout
