r"""Evaluate and adjust: try student plans, keep the best, distil it fully.

  python -m distill_jax.search --config=configs/digits_search.py --workdir=DIR

Plans are scored on a validation split carved from the training data; the first reaching
``search.target`` (or the best) is distilled, tested and exported (docs/partition.md).
"""
import dataclasses
import os
import time
from typing import Optional

import jax
import numpy as np

from distill_jax import cli, plans, plots, runner
from distill_jax.checks import Checked, check
from distill_jax.config import apply_overrides
from distill_jax.files import atomic, write_json
from distill_jax.paths import fingerprint


def plan_config(config, plan: dict, seed: int, steps: Optional[int] = None):
  """The run config of one plan: the plan's overrides, one seed, ``steps``."""
  c = apply_overrides(config, plans.plan_overrides(plan, "search.plans"))
  with c.unlocked():
    c.seed = seed
    if steps is not None:
      c.student.steps = steps
  return c


def search(config, workdir: str, checked: Optional[Checked] = None) -> dict:
  """The evaluate-and-adjust loop; returns the leaderboard."""
  start = time.time()
  checked = checked or check(config)
  full = runner.start(config, workdir, checked.data)
  val = dataclasses.replace(full, data=full.task.validation(
      full.data, config.search.val_fraction, config.data.split_seed))
  teacher, teacher_params = runner.get_teacher(val, checked.teacher)
  teacher_id, metric, task = fingerprint(teacher_params), full.task.metric, full.task
  val_reference = task.reference(teacher, teacher_params, val.data, val.mesh, config)
  s = config.search

  def score(plan: dict, directory: str) -> dict:
    rows = []
    for seed in s.seeds:
      sub = runner.start(plan_config(config, plan, seed, s.steps),
                         os.path.join(directory, f"seed_{seed}"), val.data)
      rows.append(runner.student_path(sub, teacher, teacher_params, val_reference,
                                      write=False)["student"])
    values = [r[metric] for r in rows]
    init = rows[0]["init"]
    entry = {"params": rows[0]["params"], "reused_params": init["reused_params"],
             "compression": init["compression"], "val": float(np.mean(values)),
             "val_std": float(np.std(values)), "val_per_seed": values}
    print(f"plan {plan['name']}: validation {metric} {entry['val']:.4f} (+-{entry['val_std']:.4f},"
          f" {len(values)} seeds), {entry['params']:,} params")
    return entry

  reached = lambda entry: bool(s.target) and entry["val"] >= s.target
  entries = plans.run_plans(
      list(s.plans)[:s.max_plans], score, os.path.join(workdir, "plans"),
      lambda p: plans.key_of(plan_config(config, p, 0, s.steps), list(s.seeds),
                             val.data.identity, teacher_id),
      what="search.plans", stop=reached)
  chosen = next((e for e in entries if reached(e)), None) or max(entries, key=lambda e: e["val"])
  chosen["chosen"] = True
  final = runner.start(plan_config(config, chosen["plan"], config.seed),
                       os.path.join(workdir, "final"), full.data)
  reference = task.reference(teacher, teacher_params, full.data, full.mesh, config)
  chosen["test"] = runner.student_path(final, teacher, teacher_params, reference)["student"][metric]
  board = {"metric": metric, "target": s.target, "reached_target": reached(chosen),
           "teacher": {"val": task.evaluate(teacher, teacher_params, val.data, val.mesh,
                                            config)[metric]},
           "plans": entries}
  if jax.process_index() == 0:
    write_json(os.path.join(workdir, "leaderboard.json"), board)
    plot_leaderboard(board, os.path.join(workdir, "search.png"))
  print(format_leaderboard(board))
  print(f"wall time {time.time() - start:.0f} s on {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s)")
  return board


def format_leaderboard(board: dict) -> str:
  m = board["metric"]
  rows = [("plan", "params", "reused", "compr.", f"val {m}", f"test {m}", "")]
  rows += [(e["plan"]["name"], f"{e['params']:,}", f"{e['reused_params']:,}",
            f"{e['compression']:.2f}x", f"{e['val']:.4f}+-{e['val_std']:.4f}",
            f"{e['test']:.4f}" if "test" in e else "-", "<- chosen" if e.get("chosen") else "")
           for e in board["plans"]]
  return (plots.table(rows) + f"\nteacher validation {m} {board['teacher']['val']:.4f}; target "
          f"{board['target']} {'reached' if board['reached_target'] else 'not reached'}")


def plot_leaderboard(board: dict, path: str) -> None:
  """Validation metric against student parameter count, each plan labelled, the chosen red."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for k, e in enumerate(board["plans"]):
    ax.errorbar(e["params"], e["val"], yerr=e["val_std"], fmt="o", capsize=3,
                color="tab:red" if e.get("chosen") else "tab:blue")
    ax.annotate(f"{e['plan']['name']} {e['val']:.3f}", (e["params"], e["val"]), fontsize=7,
                xytext=(6, 10 * (k % 3) - 10), textcoords="offset points")
  ax.axhline(board["teacher"]["val"], color="gray", ls="--", label="teacher")
  if board["target"]:
    ax.axhline(board["target"], color="tab:green", ls=":", label="target")
  ax.set_xscale("log")
  ax.set_xlabel("student parameters (count, log scale)")
  ax.set_ylabel(f"validation {board['metric']} (mean +- std over seeds)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  with atomic(path) as tmp:
    fig.savefig(tmp, dpi=120)
  plt.close(fig)


if __name__ == "__main__":
  cli.run(search, "Directory for the teacher, every plan's runs and the leaderboard.", check=check)
