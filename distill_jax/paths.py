"""One path language: a pytree leaf is named by its keys joined with "/".

Parameters, partition rules, sharding rules and feature captures all address leaves by these
names (e.g. ``Dense_3/kernel``), so one pair of helpers serves every rule engine.
"""
from typing import Any, Mapping

from flax import traverse_util

SEP = "/"


def flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
  """Nested dict -> ``{"a/b/c": leaf}`` in insertion (i.e. layer) order."""
  return traverse_util.flatten_dict(dict(tree), sep=SEP)


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Inverse of :func:`flatten`."""
  return traverse_util.unflatten_dict(dict(flat), sep=SEP)


def count_params(tree: Any) -> int:
  """Number of scalar parameters in a pytree."""
  import jax  # local: keeps this module importable without initialising a backend
  return int(sum(x.size for x in jax.tree_util.tree_leaves(tree)))
