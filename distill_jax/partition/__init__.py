"""Partition a parameter pytree into named groups by rules, and put it back together.

  parts = partition(params, [("depth", r"Dense_(\\d+)"), ("regex", ".*", "rest")])
  assert combine(parts) == params

Rules are tried in order for every parameter path; the first that claims it wins and the
claim is logged. A parameter no rule claims is an error listing it. User rules are
registered with ``@register("name")`` and then named in configs like the built-in kinds.
"""
from distill_jax.partition.core import Claim, Partition, combine, partition
from distill_jax.partition.rules import RULES, depth, make_rule, regex, register, role

__all__ = ["Claim", "Partition", "partition", "combine", "RULES", "register", "make_rule",
           "regex", "depth", "role"]
