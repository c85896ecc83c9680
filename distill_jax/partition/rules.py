"""Partition rules: ``rule(paths, leaves) -> {path: (group, key)}`` for the paths a rule claims
(keys layer-relative, ``Dense_*/kernel``; a stacked array, one claim per slice). Config form:
``(kind, *args[, kwargs])``.
"""
import re
from typing import Any, Callable, Optional, Sequence, Union

from distill_jax.errors import InputError
from distill_jax.paths import compile_regex
from distill_jax.registry import Registry

Claim = tuple[str, str]                       # (group, layer-relative key)
RuleFn = Callable[[list[str], dict[str, Any]], dict[str, Union[Claim, list[Claim]]]]
RULES: Registry = Registry("partition rule")


def register(name: str):
  """Decorator registering a rule *factory* ``(*args, **kwargs) -> RuleFn`` under ``name``."""
  return RULES.register(name)


def make_rule(spec) -> RuleFn:
  """A rule from its config form ``(kind, *args[, kwargs])``, or a callable as is."""
  if callable(spec):
    return spec
  spec = tuple(spec)
  if not spec or not isinstance(spec[0], str):
    raise InputError(f"partition rule {spec!r}: expected (kind, *args[, kwargs]) with kind one "
                     f"of {RULES.names()}")
  args, kwargs = list(spec[1:]), {}
  if args and isinstance(args[-1], dict):
    kwargs = dict(args.pop())
  rule = RULES.get(spec[0])(*args, **kwargs)
  rule.description = f"{spec[0]}{tuple(args)}" + (f" {kwargs}" if kwargs else "")
  return rule


@register("regex")
def regex(pattern: str, group: str) -> RuleFn:
  """Paths that ``re.fullmatch(pattern)`` go to ``group`` (which may use ``\\1`` backrefs)."""
  compiled = compile_regex(pattern, "regex rule")

  def rule(paths, leaves):
    claims = {}
    for path in paths:
      if m := compiled.fullmatch(path):
        claims[path] = (m.expand(group), path)
    return claims
  return rule


def _layer_match(pattern: re.Pattern, path: str) -> Optional[re.Match]:
  # A depth pattern names one or more whole path components (e.g. "encoder/layer_(\d+)").
  return pattern.search(path)


def _depth_group(index: int, ranges, block, stride) -> str:
  if ranges:
    for lo, hi in ranges:
      if lo <= index < hi:
        return f"layers_{lo}-{hi - 1}"
    return ""
  if block:
    return f"block_{index // block}"
  if stride:
    return f"stride_{index % stride}"
  return f"layer_{index}"


@register("depth")
def depth(pattern: Optional[str] = None, *, stacked: Optional[str] = None,
          ranges: Optional[Sequence[Sequence[int]]] = None, block: int = 0,
          stride: int = 0) -> RuleFn:
  """Group by layer index: ``pattern`` (at path-component boundaries) captures it, e.g.
  ``Dense_(\\d+)``; ``stacked`` (fullmatch) names scanned arrays split along their leading axis.
  Groups ``layer_i``; or ``ranges=[(0, 4), (4, 10)]`` -> ``layers_0-3``...; ``block=k`` ->
  ``block_{i // k}``; ``stride=k`` -> ``stride_{i % k}``. Keys are layer-relative
  (``Dense_*/kernel``) with one layer per group, full paths otherwise. A pattern with several
  captured indices (``stage_(\\d+)/block_(\\d+)``) numbers its layers 0, 1, ... in the
  order of the index tuples (stage by stage), so a ResNet's blocks are one sequence."""
  if pattern is None and stacked is None:
    raise InputError("depth rule needs a layer pattern or a stacked pattern")
  layer = compile_regex(rf"(?:^|(?<=/)){pattern}(?=/|$)", "depth rule") if pattern else None
  if layer is not None and layer.groups < 1:
    raise InputError(f"depth pattern {pattern!r} needs a capturing group for the layer index")
  scanned = compile_regex(stacked, "depth rule (stacked)") if stacked else None
  # One layer per group: keys are layer-relative ("Dense_*/kernel") so layers can be matched
  # across groups; several layers per group keep their full paths as keys.
  per_layer = not (ranges or block or stride)

  def rule(paths, leaves):
    claims = {}
    matches = {path: m for path in paths
               if not (scanned is not None and scanned.fullmatch(path))
               and layer is not None and (m := _layer_match(layer, path))}
    indices = {path: _indices(m, pattern) for path, m in matches.items()}
    # One captured index is the layer's number as it is; several are ranked.
    rank = {t: i for i, t in enumerate(sorted(set(indices.values())))}
    for path in paths:
      if scanned is not None and scanned.fullmatch(path):
        groups = [_depth_group(i, ranges, block, stride) for i in range(leaves[path].shape[0])]
        if all(groups):
          claims[path] = [(g, path if per_layer else f"{path}[{i}]")
                          for i, g in enumerate(groups)]
      elif path in matches:
        m, index = matches[path], indices[path]
        group = _depth_group(index[0] if len(index) == 1 else rank[index], ranges, block,
                             stride)
        if group:
          claims[path] = (group, _star(path, m) if per_layer else path)
    return claims
  return rule


def _indices(m: re.Match, pattern: str) -> tuple[int, ...]:
  if not all(g is not None and g.isdigit() for g in m.groups()):
    raise InputError(f"depth pattern {pattern!r}: every capturing group must capture a layer "
                     f"index (digits); on {m.string!r} they captured {m.groups()}")
  return tuple(int(g) for g in m.groups())


def _star(path: str, m: re.Match) -> str:
  """``path`` with each captured index replaced by ``*`` (the layer-relative key)."""
  for g in range(m.re.groups, 0, -1):
    path = path[:m.start(g)] + "*" + path[m.end(g):]
  return path


def layer_order(paths: Sequence[str], pattern: re.Pattern) -> list[str]:
  """Layer names (the matched prefix, e.g. ``Dense_3``) in model order: first appearance in
  the tree, names differing only in their index sorted numerically (``Dense_2``, ``Dense_10``)."""
  first_seen: dict[str, int] = {}
  layers: dict[str, tuple] = {}
  for path in paths:
    if m := pattern.search(path):
      name = path[:m.end()]
      family = name[:m.start(1)] + "#" + name[m.end(1):]
      first_seen.setdefault(family, len(first_seen))
      layers[name] = (first_seen[family], int(m.group(1)))
  return sorted(layers, key=layers.get)


@register("role")
def role(pattern: str = r"(?:Dense|Conv)_(\d+)", *, stem: int = 1, head: int = 1) -> RuleFn:
  """Input stem / body / output head: the first ``stem`` layers (in model order) are
  ``stem``, the last ``head`` are ``head``, the rest ``body``. Paths outside any layer are
  not claimed."""
  layer = compile_regex(rf"(?:^|(?<=/)){pattern}(?=/|$)", "role rule")

  def rule(paths, leaves):
    order = layer_order(paths, layer)
    roles = {name: "stem" if i < stem else "head" if i >= len(order) - head else "body"
             for i, name in enumerate(order)}
    claims = {}
    for path in paths:
      if m := layer.search(path):
        name = path[:m.end()]
        claims[path] = (roles[name], path)
    return claims
  return rule
