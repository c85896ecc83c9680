"""Recombination: build a student's parameters from a teacher's.

A strategy is ``fn(teacher_params, student_params, **options) -> (params, report)`` where
``student_params`` is a freshly initialised student (its shapes are the target and its values
the fallback for anything not taken from the teacher), registered by name so that
``config.student.init.strategy`` can pick it.
"""
from distill_jax.recombine.select import layer_indices, select
from distill_jax.registry import Registry

STRATEGIES: Registry = Registry("recombination strategy")
STRATEGIES.register("select")(select)


@STRATEGIES.register("random")
def random_init(teacher_params, student_params, **unused_options):
  """Keep the student's random initialisation (the 'no reuse' reference).

  Options meant for other strategies (e.g. ``layers``) are ignored, so that switching a config
  to ``--config.student.init.strategy=random`` needs no other override.
  """
  from distill_jax.paths import count_params
  return student_params, {"strategy": "random", "reused_params": 0,
                          "student_params": count_params(student_params)}


__all__ = ["STRATEGIES", "select", "layer_indices"]
