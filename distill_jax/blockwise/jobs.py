"""Blockwise distillation jobs and the assembled student.

Each block variant trains alone (phase ``block_{j}_{variant}_{key}`` under
``student.init.blockwise.dir``, default ``WORKDIR/blocks``): a ``<family>_block`` model learns
to map the teacher's hidden state entering block ``j`` to the one leaving it, on
``blockwise.terms``; no gradient crosses a block boundary. Its rng comes from its phase name
and its batches from ``(seed, step)``, so a block trained in its own process
(``blockwise.only=j``) has exactly the parameters it gets when all blocks train one after
another in one process; the key in the phase name (the teacher, data, block and recipe) keeps
jobs of different settings apart and lets finished ones be reused.
"""
import dataclasses
import os
import re
from typing import Any, Sequence

import ml_collections

from distill_jax import runner
from distill_jax.blockwise import layout
from distill_jax.blockwise.stitch import fit_stitches
from distill_jax.errors import InputError
from distill_jax.models.stack import family_of, parse_block
from distill_jax.paths import count_params, fingerprint


def settings(config) -> ml_collections.ConfigDict:
  return config.student.init.blockwise


def blocks_dir(run) -> str:
  return settings(run.config).dir or os.path.join(run.workdir, "blocks")


def slug(spec: str) -> str:
  return re.sub(r"[^A-Za-z0-9]+", "-", spec).strip("-")


def block_key(run, t: layout.Teacher, groups: Sequence[Sequence[int]], j: int, spec: str) -> str:
  """What defines a block job's result: teacher, data, block, variant and recipe."""
  b, c = settings(run.config), run.config
  return fingerprint({"teacher": t.id, "data": str(sorted(dict(run.data.identity).items())),
                      "groups": str([list(g) for g in groups]), "j": str(j), "spec": spec,
                      "recipe": str((b.steps, b.learning_rate, list(map(list, b.terms)), b.init,
                                     b.cache, c.seed, c.batch_size)),
                      "student": str(sorted(overrides(c).items()))})


def train_block(run, t: layout.Teacher, groups: Sequence[Sequence[int]], j: int,
                spec: str) -> dict:
  """Block ``j``'s parameters for variant ``spec`` (its layers ``layer_{k}``): the teacher's
  for ``keep``, none for ``drop``, else trained alone (resumed, or reused when finished)."""
  kind, _, _ = parse_block(spec)
  if kind == "keep":
    return layout.kept(t, groups[j])
  if kind == "drop":
    return {}
  b = settings(run.config)
  phase = f"block_{j}_{slug(spec)}_{block_key(run, t, groups, j, spec)[:8]}"
  directory = blocks_dir(run)
  data = layout.block_data(run.data, t, groups, j,
                           os.path.join(directory, phase, "activations") if b.cache else None,
                           run.config.eval_batch_size)
  model = layout.block_model(t, spec, groups[j], dict(run.data.info), overrides(run.config))
  params = layout.init_block(t, model, groups[j], dict(data.example),
                             runner.key(run.config, phase), b.init == "teacher")
  recipe = ml_collections.ConfigDict(dict(steps=b.steps, learning_rate=b.learning_rate,
                                          mixup=0.0, frozen=()))
  sub = dataclasses.replace(run, data=data, workdir=directory)
  print(f"block {j} (teacher layers {list(groups[j])}) as {spec!r}: {count_params(params):,} "
        f"params, {b.steps} steps ({phase})")
  return runner.train_phase(sub, phase, model, params, recipe, list(b.terms))["block"]


STITCHED_FIELDS = ("name", "blocks", "stitch", "bases")


def overrides(config) -> dict:
  """The student's own fields over the teacher's (e.g. ``hidden_dropout=0.0``): every key of a
  ``<family>_stitched`` ``student.model`` besides its blocks."""
  return {k: v for k, v in dict(config.student.model).items() if k not in STITCHED_FIELDS}


def student_fields(config, teacher) -> dict:
  """``student.model`` of a ``<family>_stitched`` student: the teacher's fields with the
  student's own over them as its base, and its blocks' teacher layers."""
  fields = {k: v for k, v in dict(config.student.model).items() if k in STITCHED_FIELDS}
  depth = layout.STACKS.get(teacher.name).num_layers(
      {k: v for k, v in teacher.config.items() if k != "name"})
  blocks = list(fields.get("blocks", ()))
  if not blocks:
    raise InputError(f"student.model: a {fields['name']} student needs blocks=(spec, ...), "
                     "one per block ('keep', 'drop', 'layers=N[,field=int]')")
  groups = layout.groups(settings(config).blocks, depth, len(blocks))
  stitch = [bool(settings(config).stitch)] * (len(blocks) - 1) + [False]
  base = {**{k: v for k, v in teacher.config.items() if k != "name"}, **overrides(config)}
  return {**fields, "base": base, "blocks": blocks, "groups": [list(g) for g in groups], "stitch": stitch}


def assemble(run, student, teacher, teacher_params: Any) -> tuple[Any, dict]:
  """Train (or reuse) every block of ``student`` (a ``<family>_stitched`` model), put them
  between the teacher's stem and head, fit the stitches; returns the params and the
  accounting."""
  t = layout.teacher_stack(teacher, teacher_params, dict(run.data.info),
                           fingerprint(teacher_params))
  fields = student.config
  groups = [tuple(g) for g in fields["groups"]]
  trained = [train_block(run, t, groups, j, spec) for j, spec in enumerate(fields["blocks"])]
  fresh = student.init(runner.key(run.config, 1), dict(run.data.example))
  params = dict(fresh, **layout.stem_and_head(t))
  for j, block in enumerate(trained):
    if block:
      params[f"block_{j}"] = block
  sample = run.data.rows(slice(0, run.config.student.init.num_examples))
  params = fit_stitches(student, params, t, groups, sample)
  return params, accounting(t, fields, params, settings(run.config).init == "teacher")


def train_only(run, student, teacher, teacher_params: Any, j: int) -> dict:
  """``blockwise.only=j``: block ``j`` alone, as each of ``blockwise.variants`` when a budget
  is set, else as the student's block; returns ``{variant: params}``."""
  b = settings(run.config)
  groups = [tuple(g) for g in student.config["groups"]]
  if not 0 <= j < len(groups):
    raise InputError(f"student.init.blockwise.only={j}: the student has {len(groups)} blocks "
                     f"(0..{len(groups) - 1})")
  t = layout.teacher_stack(teacher, teacher_params, dict(run.data.info),
                           fingerprint(teacher_params))
  specs = list(b.variants) if b.budget else [student.config["blocks"][j]]
  return {spec: train_block(run, t, groups, j, spec) for spec in specs}


def accounting(t: layout.Teacher, fields: dict, params: dict, init_teacher: bool) -> dict:
  """The recombination accounting (``recombine.accounting`` keys): groups ``stem+head``,
  ``block_{j}`` and ``stitch_{j}``; reused = what came from the teacher (stem, head, kept
  blocks, and blocks initialised from its layers)."""
  stem_head = count_params(layout.stem_and_head(t))
  t_sizes, s_sizes, reused = {"stem+head": stem_head}, {"stem+head": stem_head}, {
      "stem+head": stem_head}
  for j, spec in enumerate(fields["blocks"]):
    name = f"block_{j}"
    t_sizes[name] = count_params(layout.kept(t, fields["groups"][j]))
    s_sizes[name] = count_params(params.get(name, {}))
    reused[name] = s_sizes[name] if init_teacher or spec == "keep" else 0
    if f"stitch_{j}" in params:
      s_sizes[f"stitch_{j}"], reused[f"stitch_{j}"] = count_params(params[f"stitch_{j}"]), 0
  unused = count_params(t.params) - sum(t_sizes.values())
  if unused:   # e.g. BERT's pooler: in no block, not in the stitched model
    t_sizes["unused"] = unused
  m, big_m = sum(t_sizes.values()), sum(s_sizes.values())
  return {"strategy": "blockwise", "teacher_params": m, "teacher_groups": len(t_sizes),
          "teacher_group_sizes": t_sizes, "student_params": big_m,
          "student_groups": len(s_sizes), "student_group_sizes": s_sizes,
          "student_group_reused": reused, "reused_params": sum(reused.values()),
          "new_params": big_m - sum(reused.values()), "compression": m / big_m,
          "stitch_params": sum(v for k, v in s_sizes.items() if k.startswith("stitch_")),
          "blocks": {f"block_{j}": {"spec": spec, "teacher_layers": list(fields["groups"][j])}
                     for j, spec in enumerate(fields["blocks"])}}


def as_plain(student, params: dict, data) -> tuple[Any, dict]:
  """The assembled student as its family's own model (``blockwise.plain``)."""
  from distill_jax import models
  from distill_jax.models.stack import plain
  got = plain(student.config, params)
  if got is None:
    raise InputError(f"student.init.blockwise.plain: the {student.name} student (blocks "
                     f"{student.config['blocks']}, stitches {student.config['stitch']}) is not a "
                     f"plain {family_of(student.name)} model (a stitch, or layers of different "
                     "configs)")
  config, params = got
  return models.build(config, dict(data.info)), params


def check(config, student, teacher) -> None:
  """The blockwise settings, before anything is written."""
  from distill_jax import losses
  b = settings(config)
  if student.name != f"{teacher.name}_stitched":
    raise InputError(f"student.init.strategy='blockwise' needs student.model.name="
                     f"'{teacher.name}_stitched' (blocks=(spec, ...)); it is {student.name!r}")
  for bound in losses.bind(b.terms, "student.init.blockwise.terms"):
    if bound.term.reads != ("hidden",):
      raise InputError(f"student.init.blockwise.terms: {bound.name!r} does not read a block's "
                       "output; use ('block', weight, {'term': <feature term>})")
  if b.init not in ("teacher", "random"):
    raise InputError(f"student.init.blockwise.init={b.init!r}: use 'teacher' or 'random'")
  if b.steps < 0 or b.learning_rate <= 0:
    raise InputError("student.init.blockwise: steps must be >= 0 and learning_rate > 0")
  for spec in b.variants:
    parse_block(spec)
  if b.budget and not b.variants:
    raise InputError("student.init.blockwise.budget is set but blockwise.variants is empty")
  if b.plain:
    from distill_jax.models.stack import plain
    if plain(student.config) is None:
      raise InputError(f"student.init.blockwise.plain=True: blocks {student.config['blocks']} "
                       f"with stitches {student.config['stitch']} are not a plain "
                       f"{family_of(student.name)} model (no stitch, one layer config)")
  if b.only >= len(student.config["blocks"]):
    raise InputError(f"student.init.blockwise.only={b.only}: the student has "
                     f"{len(student.config['blocks'])} blocks")
