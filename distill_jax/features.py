"""Feature terms made concrete: ``(teacher, student)`` patterns resolved to captured feature
paths (``layer_pairs="prefix_{}"``: each student layer with the teacher layer it came from),
and learned projections where a ``project=True`` term's shapes differ (never exported).
"""
import dataclasses
import logging
import math
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp

from distill_jax.errors import InputError
from distill_jax.losses import Bound
from distill_jax.paths import compile_regex, flatten, unflatten


def resolve(pattern: str, features: dict, role: str) -> str:
  """The one feature path that ``pattern`` fullmatches; an error lists the paths there are."""
  compiled = compile_regex(pattern, f"feature pairs ({role})")
  hits = [name for name in features if compiled.fullmatch(name)]
  if len(hits) != 1:
    listing = ", ".join(f"{k} {tuple(v.shape[1:])}" for k, v in features.items())
    what = "no" if not hits else f"{len(hits)} ({hits})"
    raise InputError(f"feature pairs: {role} feature pattern {pattern!r} matches {what} "
                     f"features; it must match exactly one of (shapes per example): {listing}")
  return hits[0]


@dataclasses.dataclass(frozen=True)
class Resolved:
  """A feature term with concrete ``(teacher path, student path, teacher shape)`` pairs."""
  bound: Bound
  index: int                                     # the term's position in the phase's terms
  pairs: tuple[tuple[str, str, tuple[int, ...]], ...]

  def loss(self, teacher_features: dict, student_features: dict, projections: dict,
           mask: Optional[jnp.ndarray]) -> jnp.ndarray:
    """The term averaged over its pairs."""
    term, total = self.bound.term, 0.0
    for j, (t_path, s_path, t_shape) in enumerate(self.pairs):
      t = jax.lax.stop_gradient(teacher_features[t_path]).astype(jnp.float32)
      s = student_features[s_path].astype(jnp.float32)
      if term.project:
        s = project(projections.get(projection_name(self.index, j)), s, t_shape)
      extra = {"mask": mask} if term.masked else {}
      total = total + term.fn(t, s, **extra, **self.bound.options)
    return total / len(self.pairs)


def projection_name(term_index: int, pair_index: int) -> str:
  return f"term_{term_index}_pair_{pair_index}"


def project(params: Any, s: jnp.ndarray, teacher_shape: Sequence[int]) -> jnp.ndarray:
  """Apply projection ``params`` (None: shapes already agree) to student feature ``s``."""
  if params is None:
    return s
  if params["kernel"].shape[0] == s.shape[-1] and s.ndim == len(teacher_shape) + 1:
    return s @ params["kernel"] + params["bias"]          # per position, last axis only
  flat = s.reshape((s.shape[0], -1)) @ params["kernel"] + params["bias"]
  return flat.reshape((s.shape[0],) + tuple(teacher_shape))


def init_projection(student_shape: Sequence[int], teacher_shape: Sequence[int],
                    rng: jax.Array) -> Any:
  """LeCun-normal linear map from the student's feature shape to the teacher's, or None."""
  s, t = tuple(student_shape), tuple(teacher_shape)
  if s == t:
    return None
  if s[:-1] == t[:-1]:
    fan_in, fan_out = s[-1], t[-1]
  else:
    fan_in, fan_out = math.prod(s), math.prod(t)
  kernel = jax.random.normal(rng, (fan_in, fan_out), jnp.float32) / math.sqrt(fan_in)
  return {"kernel": kernel, "bias": jnp.zeros((fan_out,), jnp.float32)}


def expand_layer_pairs(template: str, teacher_layers: Optional[Sequence[int]]) -> tuple:
  """``("prefix_{}", [0, 4, 5])`` -> pairs (prefix_0, prefix_0), (prefix_4, prefix_1), ..."""
  if not teacher_layers:
    raise InputError(f"layer_pairs={template!r} pairs student layers with the teacher layers "
                     "they were initialised from, but the student's init keeps no teacher "
                     "layers (use select or width, or give pairs explicitly)")
  return tuple((template.format(t), template.format(s)) for s, t in enumerate(teacher_layers))


def setup(terms: Sequence[Bound], teacher, teacher_params: Any, student, student_params: Any,
          example: dict, rng: jax.Array,
          teacher_layers: Optional[Sequence[int]] = None) -> tuple[list[Resolved], dict]:
  """Resolve the feature terms' patterns on an example batch; returns them and the initial
  projections ``{"term_i_pair_j": {"kernel", "bias"}}`` (pairs that need none are absent)."""
  shapes = lambda model, p: jax.eval_shape(lambda q: model.apply(q, example, capture=True)[1], p)
  t_feats, s_feats = shapes(teacher, teacher_params), shapes(student, student_params)
  resolved, projections = [], {}
  for i, bound in enumerate(terms):
    if not bound.term.features:
      continue
    patterns = bound.pairs + (expand_layer_pairs(bound.layer_pairs, teacher_layers)
                              if bound.layer_pairs else ())
    pairs = []
    for j, (t_pattern, s_pattern) in enumerate(patterns):
      t_path, s_path = resolve(t_pattern, t_feats, "teacher"), resolve(s_pattern, s_feats,
                                                                       "student")
      t_shape, s_shape = tuple(t_feats[t_path].shape[1:]), tuple(s_feats[s_path].shape[1:])
      pairs.append((t_path, s_path, t_shape))
      if bound.term.project:
        p = init_projection(s_shape, t_shape, jax.random.fold_in(rng, 1000 * i + j))
        if p is not None:
          projections[projection_name(i, j)] = p
    resolved.append(Resolved(bound, i, tuple(pairs)))
  return resolved, projections


def reuse_head(teacher_params: Any, student_params: Any, pairs: Sequence[tuple[str, str]]) -> Any:
  """Copy teacher parameters under each ``(teacher prefix, student prefix)`` into the student
  where every leaf's shape fits; a prefix whose shapes differ is left as it is (and logged)."""
  t_flat, s_flat = flatten(teacher_params), dict(flatten(student_params))
  for t_prefix, s_prefix in pairs:
    t_leaves = {k[len(t_prefix):]: v for k, v in t_flat.items() if k.startswith(t_prefix + "/")}
    s_leaves = {k[len(s_prefix):]: v for k, v in s_flat.items() if k.startswith(s_prefix + "/")}
    if not t_leaves or not s_leaves:
      raise InputError(f"distill.stage1.head: no parameters under teacher {t_prefix!r} (found "
                       f"{bool(t_leaves)}) or student {s_prefix!r} (found {bool(s_leaves)})")
    fits = (t_leaves.keys() == s_leaves.keys()
            and all(t_leaves[k].shape == s_leaves[k].shape for k in t_leaves))
    if fits:
      for k, v in t_leaves.items():
        s_flat[s_prefix + k] = v
    logging.info("stage1.head: %s teacher %s -> student %s", "reused" if fits else
                 "shapes differ, kept", t_prefix, s_prefix)
  return unflatten(s_flat)
