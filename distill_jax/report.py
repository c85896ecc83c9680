r"""Print the summary of a finished or interrupted run from its files; compare several runs.

  python -m distill_jax.report --workdir=DIR
  python -m distill_jax.report --compare DIR1 DIR2 ...

A finished run has ``summary.json``; an interrupted one is summarised from ``metrics.jsonl``
(the last held-out and training figures of each phase, and the step it reached).
"""
import json
import os
import sys
from typing import Optional

from absl import app, flags

from distill_jax.plots import read_metrics

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A run's workdir.")
flags.DEFINE_list("compare", [], "Several workdirs to lay side by side (space separated after "
                                 "the flag works too).")

PHASES = ("teacher", "baseline", "student")


def run_rows(workdir: str) -> dict:
  """``{phase: {params, accuracy, agreement, step, status}}`` for one workdir."""
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"workdir {workdir!r} does not exist")
  summary_path = os.path.join(workdir, "summary.json")
  summary = json.load(open(summary_path)) if os.path.exists(summary_path) else {}
  series = read_metrics(os.path.join(workdir, "metrics.jsonl"))
  if not summary and not series:
    raise FileNotFoundError(f"{workdir!r} holds neither summary.json nor metrics.jsonl")
  rows = {}
  for phase in PHASES:
    evals, trains = series.get((phase, "eval"), []), series.get((phase, "train"), [])
    if phase not in summary and not trains:
      continue
    last_step = max([s for s, _ in evals + trains], default=None)
    row = {"step": last_step, "status": "finished" if phase in summary else "interrupted"}
    if phase in summary:
      row.update({k: summary[phase].get(k) for k in ("params", "accuracy", "agreement")})
      if phase == "baseline":
        row["params"] = summary.get("student", {}).get("params")
    elif evals:
      row.update({k: evals[-1][1].get(k) for k in ("accuracy", "agreement")})
      row["status"] += " (last test eval)"
    else:
      row["train_accuracy"] = trains[-1][1].get("accuracy")
      row["status"] += " (no test eval yet)"
    rows[phase] = row
  return {"rows": rows, "compression": summary.get("compression")}


def _fmt(value, spec: str) -> str:
  return "-" if value is None else format(value, spec)


def format_runs(runs: dict) -> str:
  """One table; with several runs each gets its own column block."""
  lines = [f"{'run':<28} {'model':<9} {'params':>9} {'test acc':>9} {'agree':>7} {'step':>6}  status"]
  for name, run in runs.items():
    for phase, row in run["rows"].items():
      acc = row.get("accuracy", row.get("train_accuracy"))
      lines.append(f"{name[-28:]:<28} {phase:<9} {_fmt(row.get('params'), ','):>9} "
                   f"{_fmt(acc, '.4f'):>9} {_fmt(row.get('agreement'), '.4f'):>7} "
                   f"{_fmt(row['step'], 'd'):>6}  {row['status']}")
    if run["compression"]:
      lines.append(f"{name[-28:]:<28} compression {run['compression']:.2f}x")
  return "\n".join(lines)


def main(argv):
  dirs = list(FLAGS.compare) + [a for a in argv[1:] if not a.startswith("-")]
  if FLAGS.workdir:
    dirs = [FLAGS.workdir] + dirs
  if not dirs:
    sys.exit("FATAL: give --workdir=DIR or --compare DIR1 DIR2 ...")
  try:
    print(format_runs({d.rstrip("/"): run_rows(d) for d in dirs}))
  except FileNotFoundError as e:
    sys.exit(f"FATAL: {e}")


if __name__ == "__main__":
  app.run(main)
