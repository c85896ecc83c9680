"""The one runner: :func:`train_phase` is the only place that wires a phase (rng, optimizer,
projections, shardings, teacher cache, jit, batches, checkpoints, ``fit``), and the phases of
the job use it; so do search, sweep, the benchmarks and the tests.
"""
import copy
import dataclasses
import json
import os
import time
import zlib
from typing import Any, Optional, Sequence

import jax
import numpy as np

from distill_jax import choose
from distill_jax import features as features_lib
from distill_jax import inference, losses, models, paths, recombine, sharding, teacher_cache, train
from distill_jax.checkpoint import (Checkpointer, MODEL_FILE, load_export_params,
                                    read_export_meta, save_export)
from distill_jax.data.feed import Feed
from distill_jax.errors import InputError, MissingInput
from distill_jax.models.ensemble import Ensemble, first_member, member_key
from distill_jax.loop import MetricsWriter, fit
from distill_jax.paths import count_params, fingerprint
from distill_jax.recombine.accounting import format_accounting, write_accounting
from distill_jax.tasks import TASKS, Task, TaskData

@dataclasses.dataclass(frozen=True)
class Run:
  """What every phase of a job shares."""
  config: Any
  task: Task
  data: TaskData
  mesh: Any
  workdir: str
  writer: Optional[MetricsWriter] = None

  def evaluator(self, model, reference: Any = None):
    evaluate = lambda params: self.task.evaluate(model, params, self.data, self.mesh,
                                                 self.config, reference)
    if not self.config.eval_cache:
      return evaluate
    from distill_jax.evaluation_cache import memoized
    return memoized(evaluate, self, model, reference)

  def with_config(self, config) -> "Run":
    return dataclasses.replace(self, config=config)


def start(config, workdir: str, data: Optional[TaskData] = None, metrics: bool = True) -> Run:
  """A :class:`Run` of ``config`` in ``workdir`` (the task's data loaded unless given)."""
  task = TASKS.get(config.task)
  data = data if data is not None else task.load(config)
  writer = (MetricsWriter(os.path.join(workdir, "metrics.jsonl"),
                          tensorboard_dir=os.path.join(workdir, "tensorboard"))
            if metrics else None)
  return Run(config, task, data, sharding.make_mesh(config.mesh.to_dict()), workdir, writer)


def key(config, part: Any = None) -> jax.Array:
  """The run's key, or folded with ``part`` (a phase name: its crc32, stable across processes)."""
  base = jax.random.PRNGKey(config.seed)
  part = zlib.crc32(part.encode()) if isinstance(part, str) else part
  return base if part is None else jax.random.fold_in(base, part)


def train_phase(run: Run, phase: str, model, params: Any, recipe, terms: Sequence,
                teacher: Optional[tuple] = None, teacher_layers: Optional[Sequence[int]] = None,
                eval_fn=None) -> Any:
  """Train ``params`` of ``model`` on ``terms`` for ``recipe.steps`` (``recipe``: steps,
  learning_rate, mixup, frozen), checkpointing in ``WORKDIR/<phase>/checkpoints`` and resuming
  from there; returns the final params. ``teacher``: ``(model, params)`` for terms that read
  it; ``eval_fn(params)`` gives held-out metrics every ``eval_every`` steps and at the end."""
  config, data = run.config, run.data
  bound = losses.bind(terms, f"{phase} terms")
  rng = key(config, phase)
  needs_teacher = any(b.term.teacher for b in bound)
  if needs_teacher and teacher is None:
    raise InputError(f"{phase} terms {[b.name for b in bound]} read a teacher; there is none")
  # On-policy distillation applies to the distillation phases (those that read a teacher).
  on_policy = config.distill.on_policy.fraction if needs_teacher else 0.0
  if on_policy and config.distill.cache:
    raise InputError(f"distill.on_policy.fraction={on_policy}: the student's own samples need "
                     f"the online teacher, but distill.cache={config.distill.cache!r}")
  resolved, projections = [], {}
  if any(b.term.features for b in bound):
    resolved, projections = features_lib.setup(bound, teacher[0], teacher[1], model, params,
                                               data.example, jax.random.fold_in(rng, 1),
                                               teacher_layers)
  tx = train.make_optimizer(recipe.learning_rate, recipe.steps, tuple(recipe.get("frozen", ())),
                            recipe.get("weight_decay", 0.0), **train.optimizer_options(recipe))
  state = train.TrainState.create(params, tx, rng, projections)
  state_shardings = sharding.tree_shardings(state, config.sharding.student, run.mesh)
  arrays, teacher_model, teacher_params, teacher_shardings = dict(data.train), None, None, None
  if not needs_teacher and data.teacher_only is not None:
    arrays = {k: v[~data.teacher_only] for k, v in arrays.items()}
  if needs_teacher:
    teacher_model, teacher_params = teacher
    if config.distill.teacher_dtype != "float32":
      teacher_params = jax.tree.map(lambda a: a.astype(config.distill.teacher_dtype),
                                    teacher_params)
    teacher_shardings = sharding.tree_shardings(teacher_params, config.sharding.teacher, run.mesh)
    teacher_params = sharding.place(teacher_params, teacher_shardings)
    if config.distill.cache and not resolved:
      arrays.update(cached_outputs(run, bound, teacher_model, teacher_params, recipe))
  step = train.make_train_step(
      model, bound, teacher_model, features=resolved, mixup_alpha=recipe.mixup,
      mixup_keys=data.mixup_keys, micro_batches=config.micro_batches,
      teacher_dtype=None if config.distill.teacher_dtype == "float32"
      else config.distill.teacher_dtype,
      resample=run.task.sampler(model, config) if on_policy else None,
      resample_fraction=on_policy, frozen=tuple(recipe.get("frozen", ())))
  jitted = train.jit_train_step(step, run.mesh, state_shardings, teacher_shardings)
  feed = Feed(config, data, arrays, phase)
  checkpointer = Checkpointer(os.path.join(run.workdir, phase, "checkpoints"))
  try:
    state = fit(phase=phase, state=state, step_fn=jitted, batch_fn=feed.batch,
                num_steps=recipe.steps, mesh=run.mesh, state_shardings=state_shardings,
                checkpointer=checkpointer, batch_size=config.batch_size,
                teacher_params=teacher_params,
                writer=run.writer, log_every=config.log_every,
                checkpoint_every=config.checkpoint_every,
                learning_rate_fn=train.learning_rate_schedule(
                    recipe.learning_rate, recipe.steps, **train.schedule_options(recipe)),
                data_meta=feed.meta, check_meta=feed.check, eval_fn=eval_fn,
                eval_every=config.eval_every)
  finally:
    checkpointer.close()
    feed.close()
  return state.params


def check_cache(config, data: TaskData) -> None:
  """Cached teacher outputs need in-memory rows that every step sees unchanged."""
  if config.distill.cache and data.source is not None:
    raise InputError(f"distill.cache={config.distill.cache!r} needs in-memory training arrays; "
                     f"this data is streamed (data.source={config.data.source!r}, host "
                     "augmentation: every step's images differ), so the teacher runs online "
                     "(set distill.cache='')")


def cached_outputs(run: Run, bound: Sequence, teacher, teacher_params: Any, recipe) -> dict:
  """The teacher's outputs on every training example, computed once (``teacher_cache.py``)."""
  config = run.config
  if recipe.mixup:
    raise InputError(f"distill.cache={config.distill.cache!r} needs a recipe without "
                     f"augmentation, but student.mixup={recipe.mixup}: mixed-up inputs need the "
                     "online teacher (set distill.cache='' or student.mixup=0)")
  check_cache(config, run.data)
  names = sorted({r for b in bound if b.term.teacher for r in b.term.reads} - {"labels"})
  # The data's identity names its tokenizer (LMs) and preprocessing besides the arrays.
  settings = {"cache": config.distill.cache, "topk": config.distill.cache_topk,
              "teacher_dtype": config.distill.teacher_dtype, "outputs": names,
              "data": dict(run.data.identity)}
  # Top-k logits are selected on the device (an LM's (N, L, vocabulary) would not fit).
  on_device = config.distill.cache == "topk" and names == ["logits"]

  def build():
    out = inference.predict(teacher, teacher_params, run.data.train, run.mesh,
                            config.eval_batch_size, run.data.prepare, names,
                            topk=config.distill.cache_topk if on_device else 0,
                            order=inference.length_order(run.data.train), desc="teacher cache")
    return teacher_cache.compute(out, config.distill.cache, config.distill.cache_topk)
  return teacher_cache.load_or_build(
      os.path.join(run.workdir, "teacher_cache"),
      teacher_cache.cache_key(teacher_params, run.data.train, settings), build)


# --- models: build, load, export ---------------------------------------------------------------

def load_model(task: Task, spec: str, data: TaskData, what: str = "teacher.load",
               combine: str = "logits") -> tuple:
  """``(model, params)`` of an export directory, or of a pretrained model the task knows;
  several, comma-separated: an :class:`Ensemble` of them (``combine``: how their logits mix)."""
  specs = [s.strip() for s in spec.split(",") if s.strip()]
  if len(specs) > 1:
    loaded = [load_model(task, s, data, f"{what} member {i}") for i, s in enumerate(specs)]
    return (Ensemble(tuple(m for m, _ in loaded), combine),
            {member_key(i): p for i, (_, p) in enumerate(loaded)})
  if os.path.isfile(os.path.join(spec, MODEL_FILE)):
    meta = read_export_meta(spec)
    model = models.build(meta["model"], {**data.info, **meta.get("info", {})})
    return model, load_export_params(spec, model, dict(data.example))
  got = task.pretrained(spec)
  if got is None:
    raise MissingInput(f"{what}={spec!r}: neither an export directory (no {MODEL_FILE}) "
                       f"nor a pretrained model the {type(task).__name__} task can read")
  model_config, params = got
  return models.build(model_config, data.info), params


def export(run: Run, phase: str, model, params: Any) -> str:
  """``WORKDIR/<phase>/export``: the common format (every process: Orbax coordinates the
  hosts) plus what the task adds (process 0)."""
  directory = save_export(os.path.join(run.workdir, phase, "export"), model, params,
                          dict(run.data.info), dict(run.data.example))
  if jax.process_index() == 0:
    run.task.export(directory, model, params, run.data, run.config)
  return directory


def get_teacher(run: Run, loaded: Optional[tuple] = None) -> tuple[Any, Any]:
  """The teacher: ``teacher.load`` (or ``loaded``, what a check already read), else trained on
  ``teacher.terms`` and exported to ``WORKDIR/teacher/export``."""
  c = run.config.teacher
  if c.load:
    return loaded or load_model(run.task, c.load, run.data, combine=c.get("combine", "logits"))
  model = models.build(c.model, run.data.info)
  params = model.init(key(run.config), dict(run.data.example))
  if c.get("init"):
    params = start_from(run, params, c.init)
  params = train_phase(run, "teacher", model, params, c, c.terms, eval_fn=run.evaluator(model))
  export(run, "teacher", model, params)
  return model, params


def start_from(run: Run, params: Any, spec: str, what: str = "teacher.init") -> Any:
  """``params`` with each array that the model ``spec`` (pretrained or an export) holds at the
  same path; the others keep their initialisation (e.g. a new head). Logged."""
  given = paths.flatten(load_model(run.task, spec, run.data, what)[1])
  flat = paths.flatten(params)
  for k in flat.keys() & given.keys():
    if np.shape(given[k]) != np.shape(flat[k]):
      raise InputError(f"{what}={spec!r}: {k} has shape {np.shape(given[k])} there and "
                       f"{np.shape(flat[k])} in the model to train")
  taken = sorted(flat.keys() & given.keys())
  if not taken:
    raise InputError(f"{what}={spec!r} holds none of the model's parameter paths (it has "
                     f"{sorted(given)[:3]}..., the model {sorted(flat)[:3]}...)")
  fresh, unused = sorted(flat.keys() - given.keys()), sorted(given.keys() - flat.keys())
  short = lambda keys: f"{len(keys)} ({', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''})"
  print(f"{what}={spec}: {len(taken)} of {len(flat)} arrays "
        f"({sum(np.size(given[k]) for k in taken):,} params) from it; initialised fresh: "
        f"{short(fresh)}; not used: {short(unused)}")
  return paths.unflatten({k: given[k] if k in given else v for k, v in flat.items()})


def student_model(config, data: TaskData, teacher) -> Any:
  """``student.model``; a student of the teacher's family starts from the teacher's fields."""
  fields = dict(config.student.model)
  teacher = first_member(teacher, None)[0]
  if fields["name"] == f"{teacher.name}_stitched":
    from distill_jax.blockwise import student_fields
    fields = student_fields(config, teacher)
  elif fields["name"] == teacher.name:
    fields = {**teacher.config, **fields}
  return models.build(fields, data.info)


# --- the student: init, choice, distillation ---------------------------------------------------

def init_student(run: Run, student, teacher, teacher_params: Any,
                 write: bool = False) -> tuple[Any, dict]:
  """Fresh student parameters, then ``student.init``'s recombination of the teacher into them;
  returns them and the accounting (written to the workdir when ``write``). An ensemble
  teacher's member 0 is what the student is built from."""
  init = run.config.student.init
  teacher, teacher_params = first_member(teacher, teacher_params)
  if init.strategy == "blockwise":
    from distill_jax import blockwise
    params, report = blockwise.assemble(run, student, teacher, teacher_params)
    if write and jax.process_index() == 0:
      write_accounting(report, run.workdir)
    return params, report
  fresh = student.init(key(run.config, 1), dict(run.data.example))
  sample = run.data.rows(slice(0, init.num_examples))
  context = recombine.Context(teacher, teacher_params, sample, run.workdir if write else None,
                              student)
  params, report = recombine.recombine(teacher_params, fresh, strategy=init.strategy,
                                       rules=init.rules, context=context,
                                       **dict(init.get(init.strategy, {})))
  if write and jax.process_index() == 0:
    write_accounting(report, run.workdir)
  return params, report


def distill(run: Run, student, params: Any, teacher, teacher_params: Any,
            teacher_layers: Optional[Sequence[int]], eval_fn) -> Any:
  """``distill.terms`` on the student; with ``distill.stage1.steps``, the feature terms alone
  first (phase ``features``), then the teacher's head copied in, then the other terms."""
  config, d = run.config, run.config.distill
  terms, pair = list(d.terms), (teacher, teacher_params)
  if d.stage1.steps:
    is_feature = lambda t: losses.TERMS.get(t[0]).features
    stage1 = copy.deepcopy(config.student)
    with stage1.unlocked():
      stage1.steps = d.stage1.steps
    params = train_phase(run, "features", student, params, stage1,
                         [t for t in terms if is_feature(t)], pair, teacher_layers, eval_fn)
    params = features_lib.reuse_head(teacher_params, params, d.stage1.head)
    terms = [t for t in terms if not is_feature(t)]
  return train_phase(run, "student", student, params, config.student, terms, pair,
                     teacher_layers, eval_fn)


def student_path(run: Run, teacher, teacher_params: Any, reference: Any,
                 write: bool = True) -> dict:
  """Build, choose, initialise, distil, evaluate (and, when ``write``, export) the student."""
  assembly = {}
  if run.config.student.init.strategy == "blockwise":   # blocks chosen under a budget
    from distill_jax import blockwise
    run, assembly = blockwise.plan(run, teacher, teacher_params)
  student = student_model(run.config, run.data, teacher)
  teacher_id = fingerprint(teacher_params)
  run, choice = choose.choose_init(run, student, teacher, teacher_params, teacher_id)
  if choice:        # the chosen plan may have changed the student's shape
    student = student_model(run.config, run.data, teacher)
  # student.init.compare: plans scored on held-out data right after initialisation (report)
  compared = {e["plan"]["name"]: {k: v for k, v in e.items() if k != "plan"}
              for e in choose.score_inits(
                  run, run.config.student.init.compare, "student.init.compare", student,
                  teacher, teacher_params, teacher_id, lambda model, params, report: {
                      **run.evaluator(model, reference)(params),
                      "reused_params": report["reused_params"]})}
  params, report = init_student(run, student, teacher, teacher_params, write)
  if run.config.student.init.strategy == "blockwise" and run.config.student.init.blockwise.plain:
    from distill_jax.blockwise import as_plain
    student, params = as_plain(student, params, run.data)
  if write:
    print(format_accounting(report))
  evaluate = run.evaluator(student, reference)
  at_init = evaluate(params)
  start = time.time()
  params = distill(run, student, params, teacher, teacher_params, report.get("teacher_layers"),
                   evaluate)
  timing = speed(run, "student", time.time() - start)
  row = {"params": count_params(params), **evaluate(params), **timing, "at_init": at_init,
         "init": report,
         "model": student.config, "terms": [list(t) for t in run.config.distill.terms]}
  if write:
    row["export"] = export(run, "student", student, params)
  out = {"student": row}
  if assembly:
    out["assembly"] = assembly
  if choice:
    out["init_choice"] = choice
  if compared:
    out["init_compare"] = compared
  return out


def speed(run: Run, phase: str, seconds: float) -> dict:
  """A training phase's wall time and its median logged throughput (the first log, which
  includes compilation, left out) in examples/s and, where the task counts them, tokens/s."""
  rates = []
  try:
    with open(os.path.join(run.workdir, "metrics.jsonl")) as f:
      for line in f:
        try:
          r = json.loads(line)
        except ValueError:
          continue
        if r.get("phase") == phase and r.get("split") == "train" and "examples_per_sec" in r:
          rates.append(r["examples_per_sec"])
  except OSError:
    pass
  out = {"train_seconds": seconds}
  if len(rates) > 1:
    out["train_examples_per_s"] = float(np.median(rates[1:]))
    tokens = run.task.tokens_per_example(run.data)
    if tokens:
      out["train_tokens_per_s"] = out["train_examples_per_s"] * tokens
  return out


def summary_row(run: Run, model, params: Any, reference: Any = None) -> dict:
  return {"params": count_params(params), **run.evaluator(model, reference)(params)}


def baseline(run: Run, teacher, reference: Any, teacher_params: Any = None) -> dict:
  """The student trained from scratch on ``baseline.terms`` with the student's recipe (terms
  that read the teacher: a randomly initialised student distilled); with
  ``baseline.from_init``, from the student's initialisation instead (``from_init`` in the row)."""
  student = student_model(run.config, run.data, teacher)
  if run.config.baseline.get("from_init"):
    fresh = init_student(run, student, teacher, teacher_params)[0]
  else:
    fresh = student.init(key(run.config, 1), dict(run.data.example))
  start = time.time()
  params = train_phase(run, "baseline", student, fresh, run.config.student,
                       run.config.baseline.terms,
                       (teacher, teacher_params) if teacher_params is not None else None,
                       eval_fn=run.evaluator(student, reference))
  timing = speed(run, "baseline", time.time() - start)
  export(run, "baseline", student, params)      # scored beside the student by any later tool
  return {**summary_row(run, student, params, reference), **timing,
          "from_init": bool(run.config.baseline.get("from_init"))}
