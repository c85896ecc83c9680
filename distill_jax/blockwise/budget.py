"""Assembly under a budget (Puzzle, Bercovich et al. 2025): every block has several variants,
each trained blockwise and scored by replacing that one block of the teacher with it
(label-free: the task's agreement with the teacher on training inputs); the student is the
combination with the best total score whose parameters fit the budget, found exactly by
dynamic programming over the blocks.
"""
import itertools
import json
import os
from typing import Any, Sequence

import jax
import numpy as np

from distill_jax import inference, models
from distill_jax.blockwise import jobs, layout
from distill_jax.config import apply_overrides
from distill_jax.errors import InputError
from distill_jax.files import write_json
from distill_jax.paths import count_params, fingerprint


def choose(costs: Sequence[Sequence[int]], scores: Sequence[Sequence[float]],
           budget: int) -> tuple[list[int], float, int]:
  """``(variant per block, total score, total cost)`` minimising the summed score with the
  summed cost <= ``budget``. Exact: a Pareto frontier of (cost, score) over the blocks so far
  (a partial choice that costs more and scores no better than another is never needed)."""
  frontier = [(0, 0.0, [])]
  for j, (cj, sj) in enumerate(zip(costs, scores)):
    grown = sorted(((c + cj[v], s + sj[v], choice + [v]) for c, s, choice in frontier
                    for v in range(len(cj)) if c + cj[v] <= budget),
                   key=lambda e: (e[0], e[1]))
    frontier, best = [], float("inf")
    for e in grown:
      if e[1] < best:
        frontier.append(e)
        best = e[1]
    if not frontier:
      cheapest = sum(min(c) for c in costs)
      raise InputError(f"student.init.blockwise.budget={budget:,}: no combination fits; the "
                       f"cheapest costs {cheapest:,} (block parameters, stem and head excluded)")
  cost, score, picked = min(frontier, key=lambda e: (e[1], e[0]))
  return picked, score, cost


def brute_force(costs, scores, budget) -> tuple[list[int], float, int]:
  """:func:`choose` by enumerating every combination (for tests and tiny cases)."""
  best = None
  for choice in itertools.product(*[range(len(c)) for c in costs]):
    cost = sum(c[v] for c, v in zip(costs, choice))
    score = sum(s[v] for s, v in zip(scores, choice))
    if cost <= budget and (best is None or (score, cost) < (best[1], best[2])):
      best = (list(choice), score, cost)
  if best is None:
    raise InputError("no combination fits the budget")
  return best


def replace_one(run, t: layout.Teacher, groups, j: int, spec: str, block: dict,
                rows: dict, reference: Any) -> float:
  """The task's agreement with the teacher of the teacher with block ``j`` replaced."""
  specs = ["keep"] * len(groups)
  specs[j] = spec
  model = models.build({"name": f"{t.family}_stitched", "base": t.base, "blocks": specs,
                        "groups": [list(g) for g in groups]}, dict(run.data.info))
  params = {f"block_{i}": layout.kept(t, g) for i, g in enumerate(groups) if i != j}
  params.update(layout.stem_and_head(t))
  if block:
    params[f"block_{j}"] = block
  name = run.task.agreement_output
  out = inference.predict(model, params, rows, run.mesh, run.config.eval_batch_size,
                          run.data.prepare, (name,))[name]
  return float(run.task.agreement(out, reference))


def plan(run, teacher, teacher_params: Any) -> tuple[Any, dict]:
  """With ``blockwise.budget``: train and score every (block, variant), choose the best
  combination under the budget, and return the run with ``student.model.blocks`` set to it,
  plus the report (every variant's cost and score, the choice)."""
  b = jobs.settings(run.config)
  if not b.budget:
    return run, {}
  if not b.variants:
    raise InputError("student.init.blockwise.budget is set but blockwise.variants is empty: "
                     "list the variants each block may take, e.g. ('keep', 'layers=1', 'drop')")
  t = layout.teacher_stack(teacher, teacher_params, dict(run.data.info),
                           fingerprint(teacher_params))
  num_blocks = len(run.config.student.model.get("blocks", ())) or len(b.blocks)
  groups = layout.groups(b.blocks, t.depth, num_blocks)
  rows = {k: v[:run.config.student.init.num_examples] for k, v in run.data.train.items()}
  name = run.task.agreement_output
  reference = inference.predict(teacher, teacher_params, rows, run.mesh, run.config.eval_batch_size,
                                run.data.prepare, (name,))[name]
  # A dropped block passes its input on: only where its two ends have one width.
  module, tparams = layout.as_stitched(t, groups, head=False)
  example = run.data.prepare(dict(run.data.example))
  widths = [np.shape(h)[-1] for h in module.apply(
      {"params": tparams}, *[example[k] for k in t.view.inputs], boundaries=True)]
  costs, scores, offered, table = [], [], [], {}
  for j in range(len(groups)):
    offered.append([v for v in b.variants if v != "drop" or widths[j] == widths[j + 1]])
    costs.append([])
    scores.append([])
    for spec in offered[-1]:
      block = jobs.train_block(run, t, groups, j, spec)
      agreement = replace_one(run, t, groups, j, spec, block, rows, reference)
      costs[-1].append(count_params(block))
      scores[-1].append(1.0 - agreement)
      table[f"block_{j}/{spec}"] = {"params": costs[-1][-1], "agreement": agreement}
  # Fixed costs: the teacher's stem and head, and the stitches (one per junction).
  fixed = count_params(layout.stem_and_head(t)) + (
      sum(w * w + w for w in widths[1:-1]) if b.stitch else 0)
  picked, score, cost = choose(costs, scores, b.budget - fixed)
  chosen = [offered[j][v] for j, v in enumerate(picked)]
  print(f"blockwise assembly under {b.budget:,} params: {chosen} ({cost + fixed:,} params, "
        f"summed disagreement {score:.4f})")
  report = {"budget": b.budget, "chosen": chosen, "params": cost + fixed, "fixed_params": fixed,
            "summed_disagreement": score, "variants": table}
  if jax.process_index() == 0:
    write_json(os.path.join(run.workdir, "assembly.json"), json.loads(json.dumps(report)))
  return run.with_config(apply_overrides(run.config, {"student.model.blocks": tuple(chosen)})), \
      report


__all__ = ["choose", "brute_force", "plan", "replace_one"]
