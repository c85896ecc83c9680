"""Everything that can be checked before anything is written: values, data, models, terms,
rules, the recombination plan and the feature pairs (a dry run on shapes, no training).

Each failure is an ``InputError`` naming the key, path or shape and the valid range.
"""
import dataclasses
import math
import re
from typing import Any, Optional

import jax
import jax.numpy as jnp

from distill_jax import features, losses, models, recombine, sharding
from distill_jax.config import plan_overrides
from distill_jax.data import steps_per_epoch
from distill_jax.errors import InputError
from distill_jax.runner import load_model, student_model
from distill_jax.tasks import TASKS, TaskData


@dataclasses.dataclass(frozen=True)
class Checked:
  """What the checks read and the job can reuse: the data, and a loaded teacher."""
  data: TaskData
  teacher: Optional[tuple] = None


# (key, lowest value, is the lowest excluded, must it be an integer)
RANGES = (("batch_size", 1, False, True), ("eval_batch_size", 1, False, True),
          ("micro_batches", 1, False, True), ("log_every", 1, False, True),
          ("checkpoint_every", 1, False, True), ("eval_every", 0, False, True),
          ("student.steps", 1, False, True), ("student.learning_rate", 0, True, False),
          ("student.mixup", 0, False, False), ("teacher.mixup", 0, False, False),
          ("student.init.num_examples", 1, False, True), ("distill.stage1.steps", 0, False, True),
          ("distill.cache_topk", 1, False, True), ("search.steps", 1, False, True),
          ("search.max_plans", 1, False, True), ("search.val_fraction", 0, True, False))
CHOICES = (("distill.cache", ("", "full", "topk")),
           ("distill.teacher_dtype", ("float32", "bfloat16", "float16")))


def _get(config, dotted: str) -> Any:
  for key in dotted.split("."):
    config = config[key]
  return config


def check_values(config) -> None:
  """Sizes, intervals, rates, choices, regexes and plan names: the ranges each may take."""
  ranges = RANGES if config.teacher.load else RANGES + (
      ("teacher.steps", 1, False, True), ("teacher.learning_rate", 0, True, False))
  for dotted, low, excluded, integer in ranges:
    v = _get(config, dotted)
    if (not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v)
        or v < low or (excluded and v == low) or (integer and not float(v).is_integer())):
      raise InputError(f"{dotted}={v!r}: must be {'an integer' if integer else 'a number'} "
                       f"{'>' if excluded else '>='} {low}")
  for dotted, choices in CHOICES:
    if _get(config, dotted) not in choices:
      raise InputError(f"{dotted}={_get(config, dotted)!r}: use one of {list(choices)}")
  if config.search.val_fraction >= 1:
    raise InputError(f"search.val_fraction={config.search.val_fraction}: must be < 1")
  if config.batch_size % config.micro_batches:
    raise InputError(f"batch_size {config.batch_size} is not divisible by micro_batches "
                     f"{config.micro_batches}")
  patterns = [("student.frozen", p) for p in config.student.frozen]
  patterns += [("teacher.frozen", p) for p in config.teacher.frozen]
  patterns += [(f"sharding.{r}", rule[0]) for r in ("student", "teacher")
               for rule in config.sharding[r]]
  for what, p in patterns:
    try:
      re.compile(p)
    except (re.error, TypeError) as e:
      raise InputError(f"{what}: {p!r} is not a valid regex ({e})") from None
  for what in ("search.plans", "sweep.variants", "student.init.compare",
               "student.init.choose.plans"):
    for p in _get(config, what):
      plan_overrides(p, what)
  for what in ("search.seeds", "sweep.seeds"):
    seeds = _get(config, what)
    if not seeds or not all(isinstance(s, int) for s in seeds):
      raise InputError(f"{what}={seeds!r}: must be a non-empty list of integer seeds")


def zeros_like_init(model, data: TaskData) -> Any:
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                      jax.eval_shape(model.init, jax.random.PRNGKey(0), dict(data.example)))


def output_names(model, data: TaskData, what: str) -> set:
  """The outputs ``model`` gives on the data's examples (shapes only: no memory is used)."""
  try:
    return set(jax.eval_shape(lambda p: model.apply(p, dict(data.example))[0],
                              jax.eval_shape(model.init, jax.random.PRNGKey(0), dict(data.example))))
  except InputError:
    raise
  except Exception as e:
    raise InputError(f"{what} {model.name!r} does not read the data's examples "
                     f"({ {k: tuple(v.shape) for k, v in data.example.items()} }): "
                     f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None


def check(config) -> Checked:
  """Check ``config`` against its task's data and models; returns what was read."""
  task = TASKS.get(config.task)
  check_values(config)
  data = task.load(config)
  task.check(config, data)
  terms = {what: losses.bind(config[what.split(".")[0]].terms, what)
           for what in ("teacher.terms", "baseline.terms", "distill.terms")}
  loaded = load_model(task, config.teacher.load, data) if config.teacher.load else None
  teacher = loaded[0] if loaded else models.build(config.teacher.model, data.info)
  tparams = loaded[1] if loaded else zeros_like_init(teacher, data)
  student = student_model(config, data, teacher)
  outputs = {"teacher": output_names(teacher, data, "teacher.model"),
             "student": output_names(student, data, "student.model")}
  used = {"teacher.terms": not config.teacher.load, "baseline.terms": config.baseline.enabled,
          "distill.terms": True}
  for what, bound in terms.items():
    for b in bound if used[what] else ():
      wanted = set(b.term.reads) - {"labels", losses.FEATURES}
      missing = {r: sorted(wanted - o) for r, o in outputs.items() if wanted - o}
      if missing:
        raise InputError(f"{what}: term {b.name!r} reads outputs {sorted(wanted)}; the models "
                         f"lack {missing} (they output {dict((r, sorted(o)) for r, o in outputs.items())})")
      if "labels" in b.term.reads and "y" not in data.train and data.num_train:
        raise InputError(f"{what}: term {b.name!r} reads labels; the {config.task} data has "
                         "none")
  init = config.student.init
  sparams = zeros_like_init(student, data)
  context = recombine.Context(teacher, tparams, dict(data.example))
  _, report = recombine.recombine(tparams, sparams, strategy=init.strategy, rules=init.rules,
                                  context=context, **dict(init.get(init.strategy, {})))
  distill = terms["distill.terms"]
  if any(b.term.features for b in distill):
    if config.distill.cache:
      raise InputError("distill.terms has feature terms: they need the teacher's forward pass, "
                       f"but distill.cache={config.distill.cache!r}; set distill.cache=''")
    features.setup(distill, teacher, tparams, student, sparams, dict(data.example),
                   jax.random.PRNGKey(0), report.get("teacher_layers"))
  if config.distill.stage1.steps:
    if not any(b.term.features for b in distill):
      raise InputError("distill.stage1.steps > 0 trains the feature terms first, but "
                       "distill.terms has none")
    features.reuse_head(tparams, sparams, config.distill.stage1.head)
  steps_per_epoch(data.num_train, config.batch_size)
  if config.batch_size % sharding.batch_size_per_step(sharding.make_mesh(config.mesh.to_dict())):
    raise InputError(f"batch_size {config.batch_size} is not a multiple of the "
                     f"{jax.device_count()} devices the batch is split over")
  return Checked(data, loaded)
