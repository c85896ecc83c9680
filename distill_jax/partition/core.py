"""``partition(params, rules) -> Partition`` and its exact inverse ``combine``."""
import dataclasses
import logging
from typing import Any, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from distill_jax.errors import InputError
from distill_jax.partition.rules import make_rule
from distill_jax.paths import flatten, unflatten

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Claim:
  """Parameter ``path`` (slice ``index`` of a stacked array, or all of it) -> ``group``/``key``."""
  path: str
  index: Optional[int]
  group: str
  key: str
  rule: str


@dataclasses.dataclass
class Partition:
  """Ordered groups of parameters plus the claims that put each one there.

  ``groups[name][key]`` is an array: a whole parameter, or one layer's slice of a stacked
  one. Groups are ordered by the first parameter they hold, in tree (model) order.
  """
  groups: dict[str, dict[str, Any]]
  claims: list[Claim]
  order: list[str]                       # parameter paths in tree order

  @property
  def names(self) -> list[str]:
    return list(self.groups)

  def sizes(self) -> dict[str, int]:
    return {g: int(sum(np.size(v) for v in members.values()))
            for g, members in self.groups.items()}

  def report(self) -> str:
    return "\n".join(f"{c.path}{'' if c.index is None else f'[{c.index}]'} -> {c.group} "
                     f"({c.rule})" for c in self.claims)


def claim_paths(flat: dict[str, Any], rules: Sequence, what: str = "partition rule",
                every_rule_matches: bool = False) -> dict:
  """``{path: (claim, rule description)}``: each path claimed by the first rule that claims it.

  Shared by partitioning and by sharding rules; a path no rule claims is an error listing it,
  and with ``every_rule_matches`` so is a rule that matches no path at all (usually a typo).
  """
  paths = list(flat)
  unclaimed, claims = set(paths), {}
  for i, rule in enumerate(make_rule(r) for r in rules):
    name = getattr(rule, "description", getattr(rule, "__name__", f"rule {i}"))
    matched = rule(paths, flat)
    if every_rule_matches and not matched:
      raise InputError(f"{what} {i} ({name}) matches no parameter; paths look like "
                       f"{paths[:3]}")
    for path, claim in matched.items():
      if path in unclaimed:            # first match wins
        unclaimed.discard(path)
        claims[path] = (claim, f"rule {i}: {name}")
  if unclaimed:
    missing = [p for p in paths if p in unclaimed]
    raise InputError(f"{len(missing)} parameter(s) claimed by no {what}: {missing}. Add a rule "
                     "for them, or a catch-all such as ('regex', '.*', 'rest') / ('.*', ()).")
  return claims


def partition(params: Any, rules: Sequence) -> Partition:
  """Split ``params`` into groups: each parameter goes to the first rule that claims it."""
  flat = flatten(params)
  paths = list(flat)
  claims = claim_paths(flat, rules, every_rule_matches=True)
  groups: dict[str, dict[str, Any]] = {}
  out: list[Claim] = []
  for path in paths:
    claim, rule = claims[path]
    pieces = [(None, claim)] if isinstance(claim, tuple) else list(enumerate(claim))
    for index, (group, key) in pieces:
      value = flat[path] if index is None else flat[path][index]
      members = groups.setdefault(group, {})
      if key in members:
        raise InputError(f"partition: group {group!r} would hold two parameters under key "
                         f"{key!r} (second: {path!r}); make the rule's keys distinct")
      members[key] = value
      out.append(Claim(path, index, group, key, rule))
      log.info("partition: %s%s -> %s (%s)", path, "" if index is None else f"[{index}]",
               group, rule)
  return Partition(groups, out, paths)


def combine(parts: Partition) -> Any:
  """The parameter pytree ``parts`` was made from (stacked slices are re-stacked)."""
  whole, slices = {}, {}
  for c in parts.claims:
    value = parts.groups[c.group][c.key]
    if c.index is None:
      whole[c.path] = value
    else:
      slices.setdefault(c.path, {})[c.index] = value
  for path, by_index in slices.items():
    if sorted(by_index) != list(range(len(by_index))):
      raise InputError(f"combine: stacked parameter {path!r} has slices {sorted(by_index)}")
    whole[path] = jnp.stack([by_index[i] for i in range(len(by_index))])
  return unflatten({p: whole[p] for p in parts.order})


def with_groups(parts: Partition, groups: dict[str, dict[str, Any]]) -> Partition:
  """The same claims with new group contents (what recombination strategies produce)."""
  for name, members in parts.groups.items():
    for key, value in members.items():
      new = groups[name][key]
      if np.shape(new) != np.shape(value):
        raise InputError(f"group {name!r} key {key!r}: new value has shape {np.shape(new)}, "
                         f"expected {np.shape(value)}")
  return Partition({name: groups[name] for name in parts.groups}, parts.claims, parts.order)
