"""Everything checked before anything is written (a dry run on shapes, no training); each
failure is an ``InputError`` naming the key, path or shape and its valid range.
"""
import dataclasses
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp

from distill_jax import features, losses, models, recombine, sharding, train
from distill_jax.config import apply_overrides, plan_overrides
from distill_jax.data import steps_per_epoch
from distill_jax.errors import InputError
from distill_jax.models.ensemble import first_member
from distill_jax.paths import compile_regex, flatten
from distill_jax.runner import check_cache, load_model, student_model
from distill_jax.tasks import TASKS, TaskData


@dataclasses.dataclass(frozen=True)
class Checked:
  """What the checks read and the job can reuse: the data, and a loaded teacher."""
  data: TaskData
  teacher: Optional[tuple] = None


# (key, lowest value, is the lowest excluded, must it be an integer)
RANGES = (("batch_size", 1, False, True), ("eval_batch_size", 1, False, True),
          ("data.eval_max_tokens", 1, False, True),
          ("micro_batches", 1, False, True), ("log_every", 1, False, True),
          ("checkpoint_every", 1, False, True), ("eval_every", 0, False, True),
          ("student.steps", 1, False, True), ("student.learning_rate", 0, True, False),
          ("student.mixup", 0, False, False), ("teacher.mixup", 0, False, False),
          ("student.init.num_examples", 1, False, True), ("distill.stage1.steps", 0, False, True),
          ("student.init.choose.num_examples", 1, False, True),
          ("distill.cache_topk", 1, False, True), ("search.steps", 1, False, True),
          ("search.max_plans", 1, False, True), ("search.val_fraction", 0, True, False),
          ("distill.on_policy.fraction", 0, False, False),
          ("distill.on_policy.prompt_length", 1, False, True),
          ("distill.on_policy.temperature", 0, False, False),
          ("distill.on_policy.top_k", 0, False, True))
CHOICES = (("distill.cache", ("", "full", "topk")), ("teacher.combine", ("logits", "probs")),
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
  if config.distill.on_policy.fraction > 1 or not 0 < config.distill.on_policy.top_p <= 1:
    raise InputError(f"distill.on_policy: fraction={config.distill.on_policy.fraction} must be "
                     f"<= 1 and top_p={config.distill.on_policy.top_p} in (0, 1]")
  # Settings of one task's data that another task would silently ignore.
  for dotted, unset in (("data.augment.copies", 0), ("data.labelled.fraction", 1.0)):
    if config.task != "text_classification" and _get(config, dotted) != unset:
      raise InputError(f"{dotted}={_get(config, dotted)!r} applies to task "
                       f"'text_classification' only, not {config.task!r}")
  for phase in ("student",) if config.teacher.load else ("teacher", "student"):
    recipe = config[phase]     # built at the phase's start: vetted before anything runs
    try:
      train.make_optimizer(1.0, 100, (), 0.0, **train.optimizer_options(recipe))
    except InputError as e:
      raise InputError(f"{phase}.optimizer / {phase}.schedule: {e}") from None
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
    compile_regex(p, what)
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
  shapes = {k: tuple(v.shape) for k, v in data.example.items()}
  for doing, f in (("be initialised", lambda: jax.eval_shape(model.init, jax.random.PRNGKey(0),
                                                             dict(data.example))),
                   ("read the data's examples", lambda: jax.eval_shape(
                       lambda p: model.apply(p, dict(data.example))[0], params))):
    try:
      params = f()
    except InputError:
      raise
    except Exception as e:
      raise InputError(f"{what} {model.config} cannot {doing} {shapes} (a size of 0 in its "
                       f"fields?): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                       ) from None
    check_sizes(params, what) if doing == "be initialised" else None
  return set(params)


def check(config) -> Checked:
  """Check ``config`` (and every plan it lists) against its task's data and models; returns
  what was read."""
  task = TASKS.get(config.task)
  check_values(config)
  data = task.load(config)
  loaded = (load_model(task, config.teacher.load, data, combine=config.teacher.combine)
            if config.teacher.load else None)
  teacher = loaded[0] if loaded else models.build(config.teacher.model, data.info)
  tparams = loaded[1] if loaded else zeros_like_init(teacher, data)
  if not loaded:
    check_sizes(tparams, "teacher.model")
  check_run(config, task, data, teacher, tparams)
  for what in ("search.plans", "sweep.variants", "student.init.compare",
               "student.init.choose.plans"):
    for p in _get(config, what):    # a plan's mistake is found now, not after the teacher
      planned = apply_overrides(config, plan_overrides(p, what), f"{what} {p['name']!r}")
      try:
        check_values(planned)
        check_run(planned, task, data, teacher, tparams, init_only=what.startswith("student"))
      except InputError as e:
        raise InputError(f"{what} {p['name']!r}: {e}") from None
  return Checked(data, loaded)


def check_sizes(params: Any, what: str) -> None:
  empty = [k for k, v in flatten(params).items() if 0 in v.shape]
  if empty:
    raise InputError(f"{what}: parameter(s) {empty} would have no elements (a width or size "
                     "of 0 in the model's fields?)")


def check_run(config, task, data: TaskData, teacher, tparams: Any,
              init_only: bool = False) -> None:
  """The checks of one run's config given the data and the teacher (a dry run on shapes);
  ``init_only``: of the student's initialisation alone (plans that are never trained)."""
  check_cache(config, data)
  task.check(config, data)
  for role in ("teacher", "student"):
    if config[role].mixup and not data.mixup_keys:
      raise InputError(f"{role}.mixup={config[role].mixup}: the {config.task} task's inputs "
                       "cannot be mixed up (token ids); set it to 0")
  terms = {what: losses.bind(config[what.split(".")[0]].terms, what)
           for what in ("teacher.terms", "baseline.terms", "distill.terms")}
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
        have = {r: sorted(o) for r, o in outputs.items()}
        raise InputError(f"{what}: term {b.name!r} reads outputs {sorted(wanted)}; the models "
                         f"lack {missing} (they output {have})")
      if "labels" in b.term.reads and "y" not in data.example and data.num_train:
        raise InputError(f"{what}: term {b.name!r} reads labels; the {config.task} data has "
                         "none")
  init = config.student.init
  sparams = zeros_like_init(student, data)
  check_sizes(sparams, "student.model")
  if init.strategy == "blockwise" or student.name.endswith("_stitched"):
    from distill_jax import blockwise
    blockwise.check(config, student, teacher)
    report = {}
    if init.strategy == "blockwise" and init.blockwise.plain:   # what trains after the init
      student = blockwise.as_plain(student, sparams, data)[0]
      sparams = zeros_like_init(student, data)
  else:
    source, source_params = first_member(teacher, tparams)   # an ensemble: its member 0
    context = recombine.Context(source, source_params, dict(data.example), None, student)
    _, report = recombine.recombine(source_params, sparams, strategy=init.strategy,
                                    rules=init.rules, context=context,
                                    **dict(init.get(init.strategy, {})))
  if init_only:
    return
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
  mesh = sharding.make_mesh(config.mesh.to_dict())
  sharding.tree_specs(tparams, config.sharding.teacher, mesh)   # axes exist, shapes divide
  if config.batch_size % sharding.batch_size_per_step(mesh):
    raise InputError(f"batch_size {config.batch_size} is not a multiple of the "
                     f"{jax.device_count()} devices the batch is split over")
