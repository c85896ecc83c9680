"""Partition a parameter pytree into named groups by rules, and put it back together.

  parts = partition(params, [("depth", r"Dense_(\\d+)"), ("regex", ".*", "rest")])
  assert combine(parts) == params
"""
from distill_jax.partition.core import Claim, Partition, combine, partition
from distill_jax.partition.rules import RULES, depth, make_rule, regex, register, role

__all__ = ["Claim", "Partition", "partition", "combine", "RULES", "register", "make_rule",
           "regex", "depth", "role"]
