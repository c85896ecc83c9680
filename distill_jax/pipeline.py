"""The main job as a function: data -> teacher -> baseline -> student -> summary.

Usable from Python (the quickstart notebook calls these steps one by one) and from the CLI
(``distill_jax.main``). Each phase trains with the same :func:`loop.fit`; only the loss
differs (labels for teacher and baseline, Hinton KD for the student).
"""
import json
import os
import zlib
from typing import Any, Optional

import jax
import numpy as np

from distill_jax import data as data_lib
from distill_jax import models, recombine, train
from distill_jax.checkpoint import Checkpointer, restore_params
from distill_jax.loop import MetricsWriter, fit
from distill_jax.paths import count_params
from distill_jax.recombine.accounting import format_accounting, write_accounting


def train_model(phase: str, model, params: Any, phase_config, config, dataset: data_lib.Dataset,
                mesh, workdir: str, teacher: Optional[tuple] = None,
                writer: Optional[MetricsWriter] = None) -> Any:
  """Train ``params`` of ``model`` for ``phase_config.steps``; returns the final params.

  ``teacher`` is ``(teacher_model, teacher_params)`` for distillation, None for labels only.
  """
  steps = phase_config.steps
  schedule_tx = train.make_optimizer(phase_config.learning_rate, steps)
  # crc32, not hash(): str hashes change between processes, and resumes must see the same key.
  rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), zlib.crc32(phase.encode()))
  state = train.create_state(model, params, schedule_tx, rng)
  teacher_apply, teacher_params = (teacher[0].apply, teacher[1]) if teacher else (None, None)
  step = train.make_train_step(model.apply, teacher_apply,
                               temperature=config.distill.temperature,
                               alpha=config.distill.alpha,
                               mixup_alpha=phase_config.get("mixup", 0.0))
  mesh_step = train.jit_train_step(step, mesh, train.replicate(state, mesh))
  checkpointer = Checkpointer(os.path.join(workdir, phase, "checkpoints"))
  lr = lambda s: phase_config.learning_rate * 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps))
  state = fit(phase=phase, state=state, step_fn=mesh_step, dataset=dataset,
              batch_size=config.batch_size, seed=config.seed, num_steps=steps, mesh=mesh,
              checkpointer=checkpointer, teacher_params=teacher_params, writer=writer,
              log_every=config.log_every, checkpoint_every=config.checkpoint_every,
              learning_rate_fn=lr)
  checkpointer.close()
  return state.params


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
  write_accounting(report, workdir)
  return params, report


def get_teacher(config, dataset, mesh, workdir, writer) -> tuple:
  """Restore the teacher from ``config.teacher.checkpoint`` or train it on labels."""
  teacher = models.build(config.teacher.model, dataset.num_classes)
  template = train.init_params(teacher, dataset.input_shape, jax.random.PRNGKey(config.seed))
  if config.teacher.checkpoint:
    return teacher, restore_params(config.teacher.checkpoint, template)
  return teacher, train_model("teacher", teacher, template, config.teacher, config, dataset,
                              mesh, workdir, writer=writer)


def run(config, workdir: str) -> dict:
  """The whole job; returns (and writes) the summary."""
  os.makedirs(workdir, exist_ok=True)
  dataset = data_lib.load(config.data)
  mesh = train.make_mesh()
  writer = MetricsWriter(os.path.join(workdir, "metrics.jsonl"))

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
                         workdir, writer=writer)
    logits = evaluate(student, params, dataset, mesh, config)
    summary["baseline"] = {"accuracy": train.accuracy(logits, dataset.y_test),
                           "agreement": train.agreement(logits, teacher_logits)}

  params, init_report = init_student(student, teacher, teacher_params, dataset, config, workdir)
  print(format_accounting(init_report))
  init_logits = evaluate(student, params, dataset, mesh, config)
  params = train_model("student", student, params, config.student, config, dataset, mesh,
                       workdir, teacher=(teacher, teacher_params), writer=writer)
  logits = evaluate(student, params, dataset, mesh, config)
  n_student = count_params(params)
  summary["student"] = {"params": n_student,
                        "accuracy": train.accuracy(logits, dataset.y_test),
                        "agreement": train.agreement(logits, teacher_logits),
                        "accuracy_at_init": train.accuracy(init_logits, dataset.y_test),
                        "init": init_report}
  summary["compression"] = summary["teacher"]["params"] / n_student
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
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
