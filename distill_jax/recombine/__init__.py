"""Recombination: teacher and fresh student partitioned by the same rules; a registered
strategy ``fn(teacher, student, context, **options) -> (groups, reused, info)`` fills the
student's groups.
"""
from typing import Any, Optional, Sequence

from distill_jax.partition import combine, partition
from distill_jax.partition.core import with_groups
from distill_jax.recombine.accounting import account, format_accounting
from distill_jax.recombine.context import Context
from distill_jax.recombine.factorize import fold, unfold
from distill_jax.recombine.strategies import STRATEGIES, layer_groups, plan_layers

# Importing registers the data-driven strategies too.
from distill_jax.recombine import depth as _depth  # noqa: F401
from distill_jax.recombine import similarity as _similarity  # noqa: F401
from distill_jax.recombine import width as _width  # noqa: F401
from distill_jax.recombine import prune as _prune  # noqa: F401
from distill_jax.recombine import channels as _channels  # noqa: F401

DEFAULT_RULES = (("depth", r"Dense_(\d+)"),)


def recombine(teacher_params: Any, student_params: Any, *, strategy: str,
              rules: Sequence = DEFAULT_RULES, context: Optional[Context] = None,
              **options) -> tuple[Any, dict]:
  """Student params made by ``strategy`` from the teacher, plus the accounting report."""
  teacher, student = partition(teacher_params, rules), partition(student_params, rules)
  # A factorised token table is recombined at full width, then split by SVD (factorize.py).
  stand_in, factored = unfold(student)
  context = context or Context()
  groups, reused, info = STRATEGIES.get(strategy)(teacher, stand_in, context, **options)
  groups, reused, info = fold(student, groups, reused, info, factored, context.batch)
  result = with_groups(student, groups)
  return combine(result), account(teacher, result, reused, dict(info, strategy=strategy))


__all__ = ["STRATEGIES", "Context", "recombine", "account", "format_accounting", "plan_layers",
           "layer_groups", "DEFAULT_RULES"]
