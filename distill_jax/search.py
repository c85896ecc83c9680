r"""Evaluate and adjust: try partition/recombination plans, keep the best, distil it fully.

  python -m distill_jax.search --config=configs/digits_search.py --workdir=DIR

A validation split is carved from the training data (the test split is never looked at while
choosing). Plans are tried in config order, each distilled for ``search.steps`` steps with
every seed in ``search.seeds``; the search stops at the first plan whose mean validation
accuracy reaches ``search.target`` (so list plans from the smallest student up), or when
``search.max_plans`` are spent, and otherwise keeps the plan with the best validation
accuracy. The chosen plan is then distilled for ``student.steps`` on the full training data
and scored on the test split. Written to DIR: ``leaderboard.json``, ``search.png``; each
plan's runs live in ``DIR/plans/<name>/seed_<s>/`` and are reused when the search is rerun.
"""
import json
import os
import time
from typing import Optional

import jax
import numpy as np

from distill_jax import data as data_lib
from distill_jax import models, pipeline, sharding, train
from distill_jax.loop import MetricsWriter


def plan_config(config, plan: dict, seed: int, steps: Optional[int] = None):
  """The run config of one plan: student model/init from the plan, one seed, ``steps``."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.seed = seed
    if "hidden" in plan:
      c.student.model.hidden = tuple(plan["hidden"])
    c.student.init.strategy = plan["strategy"]
    if "rules" in plan:
      c.student.init.rules = plan["rules"]
    c.student.init[plan["strategy"]] = dict(plan.get("options", {}))
    if steps is not None:
      c.student.steps = steps
  return c


def run_plan(plan: dict, seed: int, config, dataset: data_lib.Dataset, teacher, teacher_params,
             mesh, workdir: str, steps: Optional[int] = None) -> dict:
  """Distil one plan with one seed; returns (and caches in workdir) its result."""
  result_path = os.path.join(workdir, "result.json")
  if os.path.exists(result_path):
    with open(result_path) as f:
      return json.load(f)
  os.makedirs(workdir, exist_ok=True)
  c = plan_config(config, plan, seed, steps)
  student = models.build(c.student.model, dataset.num_classes)
  params, report = pipeline.init_student(student, teacher, teacher_params, dataset, c, workdir)
  params = pipeline.train_model("student", student, params, c.student, c, dataset, mesh,
                                workdir, teacher=(teacher, teacher_params),
                                writer=MetricsWriter(os.path.join(workdir, "metrics.jsonl")))
  logits = pipeline.evaluate(student, params, dataset, mesh, c)
  result = {"accuracy": train.accuracy(logits, dataset.y_test), "params": report["student_params"],
            "reused_params": report["reused_params"], "compression": report["compression"]}
  with open(result_path, "w") as f:
    json.dump(result, f)
  return result


def search(config, workdir: str) -> dict:
  """The evaluate-and-adjust loop; returns the leaderboard."""
  start = time.time()
  os.makedirs(workdir, exist_ok=True)
  full = data_lib.load(config.data)
  val = data_lib.split_train_val(full, config.search.val_fraction, config.data.split_seed)
  mesh = sharding.make_mesh(config.mesh.to_dict())
  teacher, teacher_params = pipeline.get_teacher(
      config, val, mesh, workdir, MetricsWriter(os.path.join(workdir, "metrics.jsonl")))
  teacher_val = train.accuracy(pipeline.evaluate(teacher, teacher_params, val, mesh, config),
                               val.y_test)
  entries, chosen = [], None
  for plan in list(config.search.plans)[:config.search.max_plans]:
    runs = [run_plan(plan, s, config, val, teacher, teacher_params, mesh,
                     os.path.join(workdir, "plans", plan["name"], f"seed_{s}"),
                     config.search.steps) for s in config.search.seeds]
    accs = [r["accuracy"] for r in runs]
    entry = {"plan": plan, "params": runs[0]["params"], "reused_params": runs[0]["reused_params"],
             "compression": runs[0]["compression"], "val_accuracy": float(np.mean(accs)),
             "val_accuracy_std": float(np.std(accs)), "val_accuracy_per_seed": accs}
    entries.append(entry)
    print(f"plan {plan['name']}: val accuracy {entry['val_accuracy']:.4f} "
          f"(+-{entry['val_accuracy_std']:.4f}, {len(accs)} seeds), {entry['params']:,} params")
    if config.search.target and entry["val_accuracy"] >= config.search.target:
      chosen = entry
      break
  chosen = chosen or max(entries, key=lambda e: e["val_accuracy"])
  chosen["chosen"] = True
  final = run_plan(chosen["plan"], config.seed, config, full, teacher, teacher_params, mesh,
                   os.path.join(workdir, "final"))
  chosen["test_accuracy"] = final["accuracy"]
  board = {"teacher": {"val_accuracy": teacher_val}, "target": config.search.target,
           "reached_target": bool(config.search.target
                                  and chosen["val_accuracy"] >= config.search.target),
           "plans": entries}
  with open(os.path.join(workdir, "leaderboard.json"), "w") as f:
    json.dump(board, f, indent=2)
  plot_leaderboard(board, os.path.join(workdir, "search.png"))
  print(format_leaderboard(board))
  print(f"wall time {time.time() - start:.0f} s on {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s)")
  return board


def format_leaderboard(board: dict) -> str:
  lines = [f"{'plan':<24} {'params':>9} {'reused':>9} {'compr.':>7} {'val acc':>16} {'test':>7}"]
  for e in board["plans"]:
    test = f"{e['test_accuracy']:.4f}" if "test_accuracy" in e else "-"
    lines.append(f"{e['plan']['name']:<24} {e['params']:>9,} {e['reused_params']:>9,} "
                 f"{e['compression']:>6.2f}x {e['val_accuracy']:.4f}+-{e['val_accuracy_std']:.4f} "
                 f"{test:>7}" + ("  <- chosen" if e.get("chosen") else ""))
  lines.append(f"teacher val accuracy {board['teacher']['val_accuracy']:.4f}; target "
               f"{board['target']} {'reached' if board['reached_target'] else 'not reached'}")
  return "\n".join(lines)


def plot_leaderboard(board: dict, path: str) -> None:
  """Validation accuracy against student parameter count, the chosen plan marked."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for e in board["plans"]:
    ax.errorbar(e["params"], e["val_accuracy"], yerr=e["val_accuracy_std"], fmt="o",
                color="tab:red" if e.get("chosen") else "tab:blue", capsize=3)
  # Labels of equal-size plans form a column, best first, each joined to its point.
  ax.margins(x=0.3)
  low, high = ax.get_ylim()
  left, right = ax.get_xlim()
  groups: dict = {}
  for e in board["plans"]:
    groups.setdefault(e["params"], []).append(e)
  for size, members in groups.items():
    members.sort(key=lambda e: -e["val_accuracy"])
    top = members[0]["val_accuracy"]
    on_left = size > (left + right) / 2          # labels towards the middle of the plot
    shift = (-0.04 if on_left else 0.04) * (right - left)
    for k, e in enumerate(members):
      ax.annotate(f"{e['plan']['name']} {e['val_accuracy']:.3f}", (size, e["val_accuracy"]),
                  xytext=(size + shift, top - k * 0.05 * (high - low)),
                  textcoords="data", fontsize=7,
                  ha="right" if on_left else "left", va="center", arrowprops=dict(arrowstyle="-", lw=0.4, color="gray"))
  ax.axhline(board["teacher"]["val_accuracy"], color="gray", ls="--", label="teacher")
  if board["target"]:
    ax.axhline(board["target"], color="tab:green", ls=":", label="target")
  ax.plot([], [], "o", color="tab:red", label="chosen plan")
  ax.set_xlabel("student parameters (count)")
  ax.set_ylabel("validation accuracy (fraction)")
  ax.set_title("plans: accuracy vs size (mean +- std over seeds)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


if __name__ == "__main__":
  from distill_jax import cli
  cli.run(search, "Directory for the search's runs, leaderboard and plot.")
