r"""Run any task: teacher, optional baseline, student (init, distillation), summary, exports.

  python -m distill_jax.main --config=configs/digits_mlp10_to3.py --workdir=runs/digits
"""
import os
import time
from typing import Optional

import jax

from distill_jax import cli, plots, runner
from distill_jax.checks import Checked, check
from distill_jax.files import write_json

NOT_METRICS = ("params", "loss", "at_init", "init", "model", "terms", "export", "reused_params")


def run_job(config, workdir: str, checked: Optional[Checked] = None) -> dict:
  """The whole job; returns (and writes) the summary."""
  start = time.time()
  checked = checked or check(config)
  run = runner.start(config, workdir, checked.data)
  teacher, teacher_params = runner.get_teacher(run, checked.teacher)
  if config.student.init.strategy == "blockwise" and config.student.init.blockwise.only >= 0:
    return block_job(run, teacher, teacher_params, start)
  reference = run.task.reference(teacher, teacher_params, run.data, run.mesh, config)
  summary = {"task": config.task, "data": run.data.name, "metric": run.task.metric,
             "teacher": runner.summary_row(run, teacher, teacher_params)}
  if config.baseline.enabled:
    summary["baseline"] = runner.baseline(run, teacher, reference, teacher_params)
  summary.update(runner.student_path(run, teacher, teacher_params, reference))
  summary["compression"] = summary["teacher"]["params"] / summary["student"]["params"]
  summary["wall_seconds"] = time.time() - start
  if jax.process_index() == 0:
    write_json(os.path.join(workdir, "summary.json"), summary)
    plots.plot_curves(os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "curves.png"),
                      metric=run.task.metric)
  print(format_summary(summary))
  print(f"wall time {summary['wall_seconds']:.0f} s on {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s); summary in {workdir}/summary.json")
  return summary


def block_job(run, teacher, teacher_params, start: float) -> dict:
  """``student.init.blockwise.only=j``: train block ``j`` (each variant, with a budget) and
  stop; the job that assembles the student reuses it from ``blockwise.dir``."""
  from distill_jax import blockwise
  from distill_jax.paths import count_params
  j = run.config.student.init.blockwise.only
  student = runner.student_model(run.config, run.data, teacher)
  trained = blockwise.train_only(run, student, teacher, teacher_params, j)
  summary = {"task": run.config.task, "block": j,
             "variants": {spec: count_params(p) for spec, p in trained.items()},
             "wall_seconds": time.time() - start}
  if jax.process_index() == 0:
    write_json(os.path.join(run.workdir, "summary.json"), summary)
  sizes = ", ".join(f"{spec}: {n:,} params" for spec, n in summary["variants"].items())
  print(f"block {j} trained ({sizes}) in {summary['wall_seconds']:.0f} s")
  return summary


def format_summary(summary: dict) -> str:
  """The summary as a small text table: one row per model, one column per metric."""
  s = summary["student"]
  columns = [summary["metric"]] + [k for k, v in s.items() if k not in NOT_METRICS
                                   and k != summary["metric"] and isinstance(v, float)]
  rows = [("model", "params", *columns)]
  cell = lambda row, k: f"{row[k]:.4f}" if isinstance(row.get(k), float) else "-"
  add = lambda name, row, params: rows.append((name, f"{params:,}",
                                               *(cell(row, k) for k in columns)))
  add("teacher", summary["teacher"], summary["teacher"]["params"])
  if "baseline" in summary:
    add("student, labels only, from its init" if summary["baseline"].get("from_init")
        else "student from scratch", summary["baseline"], summary["baseline"]["params"])
  for name, row in summary.get("init_compare", {}).items():
    add(f"student recombined: {name}", row, s["params"])
  add(f"student at init ({s['init']['strategy']})", s["at_init"], s["params"])
  add("student distilled", s, s["params"])
  return (plots.table(rows) + f"\ncompression {summary['compression']:.2f}x; student init "
          f"'{s['init']['strategy']}' reused {s['init']['reused_params']:,} teacher params")


if __name__ == "__main__":
  cli.run(run_job, "Directory for checkpoints, metrics, exports and the summary.", check=check)
