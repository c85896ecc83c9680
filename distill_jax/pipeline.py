"""The main job as a function: data -> teacher -> baseline -> student -> summary.

Usable from Python (the quickstart notebook calls these steps one by one) and from the CLI
(``distill_jax.main``). Each phase trains with the same :func:`loop.fit`; only the loss
differs (labels for teacher and baseline, Hinton KD for the student).
"""
import json
import os
import zlib
from typing import Any, Callable, Optional

import jax
import numpy as np

from distill_jax import data as data_lib
from distill_jax import features as features_lib
from distill_jax import losses, models, plots, recombine, sharding, teacher_cache, train
from distill_jax.checkpoint import Checkpointer, check_params, restore_params
from distill_jax.loop import MetricsWriter, fit
from distill_jax.paths import count_params
from distill_jax.recombine.accounting import format_accounting, write_accounting


def train_model(phase: str, model, params: Any, phase_config, config, dataset: data_lib.Dataset,
                mesh, workdir: str, teacher: Optional[tuple] = None,
                writer: Optional[MetricsWriter] = None,
                eval_fn: Optional[Callable[[Any], dict]] = None, use_features: bool = False,
                logit_weight: float = 1.0) -> Any:
  """Train ``params`` of ``model`` for ``phase_config.steps``; returns the final params.

  ``teacher`` is ``(teacher_model, teacher_params)`` for distillation, None for labels only;
  ``eval_fn(params)`` gives held-out metrics every ``config.eval_every`` steps.
  ``use_features``: add ``config.distill.features``' losses (with their projections, trained
  here and dropped from what is returned); ``logit_weight`` scales the logit loss.
  """
  steps = phase_config.steps
  rng = jax.random.fold_in(jax.random.PRNGKey(config.seed),
                           # crc32, not hash(): str hashes change between processes
                           zlib.crc32(phase.encode()))
  feature_distillation = None
  if use_features:
    feature_distillation, projections = features_lib.setup(
        config.distill.features, teacher[0].apply, teacher[1], model.apply, params,
        dataset.x_train[:2], jax.random.fold_in(rng, 1))
    params = features_lib.wrap(params, projections)
    if eval_fn is not None:
      student_eval = eval_fn
      eval_fn = lambda p: student_eval(features_lib.student_params(p))
  state = train.create_state(model, params, train.make_optimizer(phase_config.learning_rate,
                                                                 steps), rng)
  state_shardings = sharding.tree_shardings(state, config.sharding.student, mesh)
  teacher_apply = teacher_params = teacher_shardings = cache = None
  distill = config.distill
  if teacher:
    teacher_params = teacher[1]
    if distill.teacher_dtype != "float32":
      teacher_params = jax.tree.map(lambda a: a.astype(distill.teacher_dtype), teacher_params)
    teacher_shardings = sharding.tree_shardings(teacher_params, config.sharding.teacher, mesh)
    teacher_params = sharding.place(teacher_params, teacher_shardings)
    if distill.cache and not use_features:   # features need the teacher's forward pass
      cache = teacher_outputs(teacher[0], teacher_params, dataset, mesh, config, workdir)
    else:
      teacher_apply = teacher[0].apply
  step = train.make_train_step(model.apply, teacher_apply, temperature=distill.temperature,
                               alpha=distill.alpha, mixup_alpha=phase_config.get("mixup", 0.0),
                               micro_batches=config.micro_batches,
                               teacher_dtype=None if distill.teacher_dtype == "float32"
                               else distill.teacher_dtype,
                               logit_loss=distill.get("logit_loss", "kd"),
                               logit_options=dict(distill.get(distill.get("logit_loss", "kd"),
                                                              {})),
                               logit_weight=logit_weight, features=feature_distillation)
  jitted = train.jit_train_step(step, mesh, state_shardings, teacher_shardings)
  per_epoch = data_lib.steps_per_epoch(len(dataset.x_train), config.batch_size)

  def batch_fn(i: int) -> dict:
    idx = data_lib.local_indices(len(dataset.x_train), config.batch_size, config.seed, i,
                                 jax.process_index(), jax.process_count())
    batch = {"x": dataset.x_train[idx], "y": dataset.y_train[idx]}
    if cache:
      batch.update({k: v[idx] for k, v in cache.items()})
    return batch

  def data_meta(i: int) -> dict:
    epoch, index = divmod(i, per_epoch)
    return {"phase": phase, "data": {"seed": config.seed, "batch_size": config.batch_size,
                                     "epoch": epoch, "index_in_epoch": index}}

  checkpointer = Checkpointer(os.path.join(workdir, phase, "checkpoints"))
  state = fit(phase=phase, state=state, step_fn=jitted, batch_fn=batch_fn, num_steps=steps,
              mesh=mesh, state_shardings=state_shardings, checkpointer=checkpointer,
              batch_size=config.batch_size, teacher_params=teacher_params, writer=writer,
              log_every=config.log_every, checkpoint_every=config.checkpoint_every,
              learning_rate_fn=train.learning_rate_schedule(phase_config.learning_rate, steps),
              data_meta=data_meta, eval_fn=eval_fn,
              eval_every=config.get("eval_every", 0))
  checkpointer.close()
  return features_lib.student_params(state.params)


def make_eval_fn(model, dataset: data_lib.Dataset, mesh, config,
                 teacher_logits: Optional[np.ndarray] = None) -> Callable[[Any], dict]:
  """Held-out (test split) loss, accuracy and, given the teacher's logits, agreement."""

  def eval_fn(params) -> dict:
    logits = train.predict(model.apply, params, dataset.x_test, mesh, config.eval_batch_size)
    metrics = {"loss": float(losses.cross_entropy(logits, dataset.y_test)),
               "accuracy": train.accuracy(logits, dataset.y_test)}
    if teacher_logits is not None:
      metrics["agreement"] = train.agreement(logits, teacher_logits)
    return metrics
  return eval_fn


def teacher_outputs(teacher, teacher_params: Any, dataset: data_lib.Dataset, mesh, config,
                    workdir: str) -> dict:
  """The teacher-output cache for ``dataset``'s training inputs (see ``teacher_cache.py``)."""
  if config.student.get("mixup", 0.0):
    raise ValueError("distill.cache needs a recipe without augmentation, but student.mixup="
                     f"{config.student.mixup}: mixed-up inputs need the online teacher "
                     "(set --config.distill.cache='' or --config.student.mixup=0)")
  preprocessing = {"data": config.data.to_dict(), "teacher_dtype": config.distill.teacher_dtype}
  key = teacher_cache.cache_key(teacher_params, dataset, preprocessing, config.distill.cache,
                                config.distill.cache_topk)
  predict = lambda x: train.predict(teacher.apply, teacher_params, x, mesh,
                                    config.eval_batch_size)
  return teacher_cache.load_or_build(
      workdir, key, lambda: teacher_cache.compute(predict, dataset.x_train, config.distill.cache,
                                                  config.distill.cache_topk))


def evaluate(model, params: Any, dataset: data_lib.Dataset, mesh, config) -> np.ndarray:
  """Test-split logits of ``model``."""
  return train.predict(model.apply, params, dataset.x_test, mesh, config.eval_batch_size)


def init_student(student, teacher, teacher_params: Any, dataset: data_lib.Dataset, config,
                 workdir: Optional[str] = None) -> tuple:
  """Random student parameters, then the configured recombination of the teacher into them.

  ``config.student.init.strategy`` names the strategy; its options are
  ``config.student.init[strategy]``. Data-driven strategies see up to ``init.num_examples``
  training inputs. The accounting report is written to ``workdir``.
  """
  init = config.student.init
  rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
  fresh = train.init_params(student, dataset.input_shape, rng)
  context = recombine.Context(teacher.apply, teacher_params,
                              dataset.x_train[:init.get("num_examples", 512)], workdir)
  options = dict(init.get(init.strategy, {}))
  params, report = recombine.recombine(teacher_params, fresh, strategy=init.strategy,
                                       rules=init.rules, context=context, **options)
  if jax.process_index() == 0:
    write_accounting(report, workdir)
  return params, report


def get_teacher(config, dataset, mesh, workdir, writer) -> tuple:
  """Restore the teacher from ``config.teacher.checkpoint`` or train it on labels."""
  teacher = models.build(config.teacher.model, dataset.num_classes)
  template = train.init_params(teacher, dataset.input_shape, jax.random.PRNGKey(config.seed))
  if config.teacher.checkpoint:
    return teacher, restore_params(config.teacher.checkpoint, template)
  return teacher, train_model("teacher", teacher, template, config.teacher, config, dataset,
                              mesh, workdir, writer=writer,
                              eval_fn=make_eval_fn(teacher, dataset, mesh, config))


def validate(config) -> data_lib.Dataset:
  """Check the config against the data and the models before anything is written or trained.

  Loads the data, checks that both models accept its examples, that a teacher checkpoint
  exists, that the partition rules claim every parameter and that the recombination plan
  fits the student (a dry run on freshly initialised parameters). Returns the dataset.
  """
  dataset = data_lib.load(config.data)
  built = {}
  for role in ("teacher", "student"):
    model = models.build(config[role].model, dataset.num_classes)
    try:
      params = train.init_params(model, dataset.input_shape, jax.random.PRNGKey(0))
      logits = jax.eval_shape(lambda p, x: model.apply({"params": p}, x), params,
                              dataset.x_train[:2])
    except Exception as e:
      raise ValueError(f"{role}.model {config[role].model.name!r} does not accept the data's "
                       f"examples of shape {dataset.input_shape}: {type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''}") from None
    if logits.shape != (2, dataset.num_classes):
      raise ValueError(f"{role}.model outputs shape {logits.shape[1:]}, the data has "
                       f"{dataset.num_classes} classes")
    built[role] = (model, params)
  if config.teacher.checkpoint:
    check_params(config.teacher.checkpoint, built["teacher"][1])
  init = config.student.init
  (teacher, tparams), (_, sparams) = built["teacher"], built["student"]
  recombine.recombine(tparams, sparams, strategy=init.strategy, rules=init.rules,
                      context=recombine.Context(teacher.apply, tparams, dataset.x_train[:8]),
                      **dict(init.get(init.strategy, {})))
  feature_config = config.distill.get("features", None)
  if feature_config and feature_config.pairs:
    if config.distill.cache and not feature_config.stagewise:
      raise ValueError("distill.features needs the teacher's forward pass (its intermediate "
                       f"features), but distill.cache={config.distill.cache!r}; set "
                       "--config.distill.cache='' or use features.stagewise")
    teacher_model = built["teacher"][0]
    features_lib.setup(feature_config, teacher_model.apply, tparams, built["student"][0].apply,
                       sparams, dataset.x_train[:2], jax.random.PRNGKey(0))
    if feature_config.stagewise:
      features_lib.reuse_head(tparams, sparams, feature_config.head)
  logit_loss = config.distill.get("logit_loss", "kd")
  losses.LOGIT_LOSSES.get(logit_loss)
  if config.batch_size % sharding.batch_size_per_step(sharding.make_mesh(config.mesh.to_dict())):
    raise ValueError(f"batch_size {config.batch_size} is not a multiple of the "
                     f"{jax.device_count()} devices the batch is split over")
  return dataset


def run(config, workdir: str, dataset: Optional[data_lib.Dataset] = None) -> dict:
  """The whole job; returns (and writes) the summary."""
  os.makedirs(workdir, exist_ok=True)
  dataset = dataset if dataset is not None else data_lib.load(config.data)
  mesh = sharding.make_mesh(config.mesh.to_dict())
  writer = MetricsWriter(os.path.join(workdir, "metrics.jsonl"),
                         tensorboard_dir=os.path.join(workdir, "tensorboard"))

  teacher, teacher_params = get_teacher(config, dataset, mesh, workdir, writer)
  teacher_logits = evaluate(teacher, teacher_params, dataset, mesh, config)

  student = models.build(config.student.model, dataset.num_classes)
  summary = {"dataset": dataset.name,
             "teacher": {"params": count_params(teacher_params),
                         "accuracy": train.accuracy(teacher_logits, dataset.y_test)}}
  if config.baseline:
    fresh = train.init_params(student, dataset.input_shape,
                              jax.random.fold_in(jax.random.PRNGKey(config.seed), 1))
    params = train_model("baseline", student, fresh, config.student, config, dataset, mesh,
                         workdir, writer=writer, eval_fn=make_eval_fn(
                             student, dataset, mesh, config, teacher_logits))
    logits = evaluate(student, params, dataset, mesh, config)
    summary["baseline"] = {"accuracy": train.accuracy(logits, dataset.y_test),
                           "agreement": train.agreement(logits, teacher_logits)}

  params, init_report = init_student(student, teacher, teacher_params, dataset, config, workdir)
  print(format_accounting(init_report))
  init_logits = evaluate(student, params, dataset, mesh, config)
  student_eval = make_eval_fn(student, dataset, mesh, config, teacher_logits)
  feature_config = config.distill.get("features", None)
  use_features = bool(feature_config and feature_config.pairs)
  if use_features and feature_config.stagewise:
    # Stage 1 (FitNets): the student's feature extractor learns the teacher's features alone;
    # then the teacher's head is copied in where its shapes fit, and stage 2 distils outputs.
    stage1 = config.student.copy_and_resolve_references()
    stage1.steps = feature_config.stage1_steps
    params = train_model("features", student, params, stage1, config, dataset, mesh, workdir,
                         teacher=(teacher, teacher_params), writer=writer, eval_fn=student_eval,
                         use_features=True, logit_weight=0.0)
    params = features_lib.reuse_head(teacher_params, params, feature_config.head)
    use_features = False
  params = train_model("student", student, params, config.student, config, dataset, mesh,
                       workdir, teacher=(teacher, teacher_params), writer=writer,
                       eval_fn=student_eval, use_features=use_features)
  logits = evaluate(student, params, dataset, mesh, config)
  n_student = count_params(params)
  summary["student"] = {"params": n_student,
                        "accuracy": train.accuracy(logits, dataset.y_test),
                        "agreement": train.agreement(logits, teacher_logits),
                        "accuracy_at_init": train.accuracy(init_logits, dataset.y_test),
                        "init": init_report,
                        "distill": {"logit_loss": config.distill.get("logit_loss", "kd"),
                                    "features": (feature_config.to_dict()
                                                 if feature_config and feature_config.pairs
                                                 else None)}}
  summary["compression"] = summary["teacher"]["params"] / n_student
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
    plots.plot_curves(os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "curves.png"))
  print(format_summary(summary))
  return summary


def format_summary(summary: dict) -> str:
  """The summary as a small text table."""
  t, s, b = summary["teacher"], summary["student"], summary.get("baseline")
  rows = [("model", "params", "test acc", "agreement w/ teacher"),
          ("teacher", f"{t['params']:,}", f"{t['accuracy']:.4f}", "-")]
  if b:
    rows.append(("student from scratch", f"{s['params']:,}", f"{b['accuracy']:.4f}",
                 f"{b['agreement']:.4f}"))
  rows.append(("student distilled", f"{s['params']:,}", f"{s['accuracy']:.4f}",
               f"{s['agreement']:.4f}"))
  widths = [max(len(r[i]) for r in rows) for i in range(4)]
  lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
  lines.insert(1, "  ".join("-" * w for w in widths))
  lines.append(f"compression {summary['compression']:.2f}x; student init "
               f"'{s['init']['strategy']}' reused {s['init']['reused_params']:,} teacher params")
  return "\n".join(lines)
