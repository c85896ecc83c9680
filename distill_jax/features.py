"""Intermediate features by name, learned projections, and the feature-level distillation loss.

Any Flax model exposes its submodules' outputs through ``capture_intermediates``: no model is
edited. Their "/"-joined paths (``Conv_1``, ``Dense_0``, ``GRU_0/forward_rnn/1``; values a
module ``sow``s into "intermediates" appear under their own names) are matched by regex with
``re.fullmatch``, like parameter paths. A config pairs teacher and student features:

    features.pairs = (("Dense_0", "Dense_1"),)          # (teacher path, student path)
    features.losses = (("hint", 1.0), ("rkd", 0.5))     # FEATURE_LOSSES names and weights

Losses that compare features elementwise (``project = True``) map the student's feature to the
teacher's shape with a learned linear projection when the shapes differ: a Dense on the last
axis if the other axes agree, else on the flattened feature. While training, the student's
parameters travel as ``{"student": ..., "projection": ...}``; :func:`student_params` strips
the projection, so it never reaches the exported student.
"""
import dataclasses
import logging
import math
import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax.traverse_util import flatten_dict

from distill_jax.losses import FEATURE_LOSSES
from distill_jax.paths import flatten, unflatten

STUDENT, PROJECTION = "student", "projection"


def feature_dict(intermediates: Any) -> dict[str, jnp.ndarray]:
  """Flatten Flax's intermediates collection to ``{path: array}``.

  ``capture_intermediates`` stores each module's outputs as ``Module/__call__ -> (out,)``;
  the ``__call__`` level and one-element tuples are dropped, other tuple elements get their
  index (an RNN returns ``(carry, outputs)``: ``.../forward_rnn/1`` is the outputs).
  """
  out = {}

  def add(path, value):
    if isinstance(value, (tuple, list)):
      if len(value) == 1:
        add(path, value[0])
      else:
        for i, v in enumerate(value):
          add(path + (str(i),), v)
    else:
      out["/".join(path)] = value

  for path, value in flatten_dict(intermediates, keep_empty_nodes=False).items():
    add(tuple(p for p in path if p != "__call__"), value)
  out.pop("", None)   # the model's own output (the logits) is not a feature
  return out


def capture(apply_fn: Callable, params: Any, x: jnp.ndarray, **kwargs) -> tuple:
  """``(output, {path: feature})`` of one forward pass."""
  out, state = apply_fn({"params": params}, x, capture_intermediates=True,
                        mutable=["intermediates"], **kwargs)
  return out, feature_dict(state.get("intermediates", {}))


def resolve(pattern: str, features: dict, role: str) -> str:
  """The one feature path that ``pattern`` fullmatches; an error lists the paths there are."""
  hits = [name for name in features if re.fullmatch(pattern, name)]
  if len(hits) != 1:
    listing = ", ".join(f"{k} {tuple(v.shape[1:])}" for k, v in features.items())
    what = "no" if not hits else f"{len(hits)} ({hits})"
    raise ValueError(f"features.pairs: {role} feature pattern {pattern!r} matches {what} "
                     f"features; it must match exactly one of (shapes per example): {listing}")
  return hits[0]


@dataclasses.dataclass(frozen=True)
class FeatureDistillation:
  """Resolved feature pairs and weighted losses; built once by :func:`setup`."""
  pairs: tuple[tuple[str, str], ...]              # concrete (teacher path, student path)
  teacher_shapes: tuple[tuple[int, ...], ...]     # per pair, without the batch axis
  losses: tuple[tuple[str, float], ...]

  def loss(self, teacher_features: dict, student_features: dict,
           projections: dict) -> tuple[jnp.ndarray, dict]:
    """Sum over pairs and losses of weight * loss; also each loss's sum over pairs."""
    parts = {name: 0.0 for name, _ in self.losses}
    for i, ((t_path, s_path), t_shape) in enumerate(zip(self.pairs, self.teacher_shapes)):
      t = jax.lax.stop_gradient(teacher_features[t_path]).astype(jnp.float32)
      s = student_features[s_path].astype(jnp.float32)
      projected = project(projections.get(f"pair_{i}"), s, t_shape)
      for name, _ in self.losses:
        fn = FEATURE_LOSSES.get(name)
        parts[name] = parts[name] + fn(t, projected if fn.project else s)
    total = sum(weight * parts[name] for name, weight in self.losses)
    return total, parts


def project(params: Any, s: jnp.ndarray, teacher_shape: Sequence[int]) -> jnp.ndarray:
  """Apply pair projection ``params`` (None: shapes already agree) to student feature ``s``."""
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


def setup(features_config, teacher_apply: Callable, teacher_params: Any,
          student_apply: Callable, student_params: Any, sample_x: Any,
          rng: jax.Array) -> tuple[FeatureDistillation, dict]:
  """Resolve the config's feature patterns on a sample batch; return the distillation and the
  initial projection parameters ``{"pair_i": {"kernel", "bias"}}`` (pairs that need none are
  absent)."""
  losses = tuple((str(name), float(weight)) for name, weight in features_config.losses)
  for name, _ in losses:
    FEATURE_LOSSES.get(name)        # unknown names fail here, listing the known ones
  shapes = lambda apply, p: jax.eval_shape(lambda q: capture(apply, q, sample_x)[1], p)
  t_feats, s_feats = shapes(teacher_apply, teacher_params), shapes(student_apply, student_params)
  projected = any(FEATURE_LOSSES.get(name).project for name, _ in losses)
  pairs, t_shapes, projections = [], [], {}
  for i, (t_pattern, s_pattern) in enumerate(features_config.pairs):
    t_path = resolve(t_pattern, t_feats, "teacher")
    s_path = resolve(s_pattern, s_feats, "student")
    t_shape, s_shape = t_feats[t_path].shape[1:], s_feats[s_path].shape[1:]
    pairs.append((t_path, s_path))
    t_shapes.append(tuple(t_shape))
    if projected:
      p = init_projection(s_shape, t_shape, jax.random.fold_in(rng, i))
      if p is not None:
        projections[f"pair_{i}"] = p
  return FeatureDistillation(tuple(pairs), tuple(t_shapes), losses), projections


def wrap(student_params: Any, projections: dict) -> dict:
  """The pytree trained when features are distilled: student and projection side by side."""
  return {STUDENT: student_params, PROJECTION: projections}


def student_params(params: Any) -> Any:
  """The student alone: drops the projection that only feature distillation uses."""
  if isinstance(params, dict) and set(params) == {STUDENT, PROJECTION}:
    return params[STUDENT]
  return params


def reuse_head(teacher_params: Any, student_params: Any,
               pairs: Sequence[tuple[str, str]]) -> Any:
  """Copy teacher parameters under each ``(teacher prefix, student prefix)`` into the student
  where every leaf's shape fits; a prefix whose shapes differ is left as it is (and logged)."""
  t_flat, s_flat = flatten(teacher_params), dict(flatten(student_params))
  for t_prefix, s_prefix in pairs:
    t_leaves = {k[len(t_prefix):]: v for k, v in t_flat.items() if k.startswith(t_prefix + "/")}
    s_leaves = {k[len(s_prefix):]: v for k, v in s_flat.items() if k.startswith(s_prefix + "/")}
    if not t_leaves or not s_leaves:
      raise ValueError(f"features.head: no parameters under teacher {t_prefix!r} "
                       f"(found {bool(t_leaves)}) or student {s_prefix!r} (found {bool(s_leaves)})")
    fits = (t_leaves.keys() == s_leaves.keys()
            and all(t_leaves[k].shape == s_leaves[k].shape for k in t_leaves))
    if fits:
      for k, v in t_leaves.items():
        s_flat[s_prefix + k] = v
    logging.info("features.head: %s teacher %s -> student %s", "reused" if fits else
                 "shapes differ, kept", t_prefix, s_prefix)
  return unflatten(s_flat)
