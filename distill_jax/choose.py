"""Choosing how the student starts, before any training: every plan's student recombined from
the teacher and scored (``student.init.choose``: by agreement with the teacher on training
inputs, no labels, among the plans within a parameter budget; ``student.init.compare``: on
held-out data, for the report). Scores are cached per plan (``plans.run_plans``).
"""
from __future__ import annotations

import itertools
import os
from typing import Any, Sequence

import jax

from distill_jax import inference, plans, recombine, runner
from distill_jax.config import apply_overrides
from distill_jax.errors import InputError
from distill_jax.partition import partition
from distill_jax.paths import count_params


def layer_plans(run: runner.Run, student, teacher_params: Any) -> list[dict]:
  """``select`` plans for every choice of the student's depth among the teacher's layers."""
  rules = run.config.student.init.rules
  depth = lambda params: len(recombine.layer_groups(partition(params, rules)))
  m = depth(jax.eval_shape(student.init, runner.key(run.config), dict(run.data.example)))
  return [{"name": "layers_" + ",".join(map(str, c)), "student.init.strategy": "select",
           "student.init.select.layers": c}
          for c in itertools.combinations(range(depth(teacher_params)), m)]


def score_inits(run: runner.Run, candidates: Sequence[dict], what: str, student, teacher,
                teacher_params: Any, teacher_id: str, measure) -> list[dict]:
  """Each plan's student (``student``, or the one built for a plan that sets
  ``student.model.*``), right after initialisation, scored by ``measure(model, params,
  accounting)``; cached in ``WORKDIR/<what>/<plan>/``."""
  planned = lambda p: run.with_config(apply_overrides(run.config, plans.plan_overrides(p, what)))

  def score(p: dict, directory: str) -> dict:   # a plan may change the student's shape
    plan_run = planned(p)
    reshaped = any(k.startswith("student.model.") for k in plans.plan_overrides(p, what))
    model = runner.student_model(plan_run.config, run.data, teacher) if reshaped else student
    return measure(model, *runner.init_student(plan_run, model, teacher, teacher_params))

  return plans.run_plans(candidates, score, os.path.join(run.workdir, what.split(".")[-1]),
                         lambda p: plans.key_of(planned(p).config.student, run.config.data,
                                                run.data.identity, teacher_id, what), what=what)


def choose_init(run: runner.Run, student, teacher, teacher_params: Any,
                teacher_id: str) -> tuple[runner.Run, dict]:
  """``student.init.choose``: the plan whose student agrees best with the teacher before any
  training (no labels); returns the run with that plan applied, and every plan's score."""
  choose = run.config.student.init.choose
  if not choose.by:
    return run, {}
  if choose.by != "agreement":
    raise InputError(f"student.init.choose.by={choose.by!r}: use '' or 'agreement'")
  rows = {k: v[:choose.num_examples] for k, v in run.data.train.items()}
  name = run.task.agreement_output
  outputs = lambda m, p: inference.predict(m, p, rows, run.mesh, run.config.eval_batch_size,
                                           run.data.prepare, (name,))[name]
  candidates, over = within_budget(run, list(choose.plans) or layer_plans(run, student,
                                                                         teacher_params),
                                   teacher, teacher_params)
  reference = outputs(teacher, teacher_params)          # the teacher's, once for every plan
  entries = score_inits(
      run, candidates, "student.init.choose", student, teacher, teacher_params, teacher_id,
      lambda model, params, report: {
          "agreement": run.task.agreement(outputs(model, params), reference),
          "params": report["student_params"]})
  best = max(entries, key=lambda e: e["agreement"])
  print(f"student init chosen by agreement with the teacher on {choose.num_examples} training "
        f"examples: {best['plan']['name']} ({best['agreement']:.4f}, {best['params']:,} "
        f"params; {len(entries)} plans, {len(over)} over budget)")
  chosen = run.with_config(apply_overrides(run.config, plans.plan_overrides(best["plan"], "")))
  return chosen, {"chosen": best["plan"]["name"],
                  "agreement": {e["plan"]["name"]: e["agreement"] for e in entries},
                  "params": {e["plan"]["name"]: e["params"] for e in entries},
                  "over_budget": over}


def within_budget(run: runner.Run, candidates: list[dict], teacher,
                  teacher_params: Any) -> tuple[list[dict], dict]:
  """The plans whose student has at most ``student.init.choose.budget`` parameters (a
  fraction of the teacher's when <= 1; 0: no limit), and ``{name: params}`` of the others.
  Sizes come from shapes alone (``jax.eval_shape``)."""
  budget = float(run.config.student.init.choose.budget)
  if budget <= 0:
    return candidates, {}
  limit = budget * count_params(teacher_params) if budget <= 1 else budget
  kept, over = [], {}
  for p in candidates:
    config = apply_overrides(run.config, plans.plan_overrides(p, "student.init.choose"))
    model = runner.student_model(config, run.data, teacher)
    size = count_params(jax.eval_shape(model.init, runner.key(config), dict(run.data.example)))
    if size <= limit:
      kept.append(p)
    else:
      over[p["name"]] = size
  if not kept:
    raise InputError(f"student.init.choose.budget={budget:g} ({limit:,.0f} params): every plan "
                     f"is over it ({', '.join(f'{n} {s:,}' for n, s in over.items())})")
  return kept, over
