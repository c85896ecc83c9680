"""``influence``: drop the blocks that change their input least (ShortGPT's Block Influence,
Men et al. 2024): on calibration inputs, block i's score is 1 - similarity(its input, its
output) per token, and the student keeps the m highest-scoring blocks, in order. Similarity is
the mean per-token cosine, or linear CKA over the tokens.
"""
from typing import Optional, Sequence

import numpy as np

from distill_jax.errors import InputError
from distill_jax.partition import Partition
from distill_jax.recombine.context import Context
from distill_jax.recombine.similarity import layer_outputs, linear_cka
from distill_jax.recombine.strategies import STRATEGIES, _first, fill_from_blocks, layer_groups

# Where a family's first block reads its input from (the captured embedding output).
EMBEDDINGS = ("embed", "embeddings", "encoder/embeddings")


def token_cosine(x: np.ndarray, y: np.ndarray) -> float:
  """Mean over tokens of cos(x_t, y_t) for (..., d) activations."""
  x = x.reshape(-1, x.shape[-1]).astype(np.float64)
  y = y.reshape(-1, y.shape[-1]).astype(np.float64)
  norms = np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1), 1e-12)
  return float(np.mean(np.sum(x * y, 1) / norms))


def block_influence(teacher: Partition, context: Context, measure: str = "cosine") -> list:
  """Each layer group's influence 1 - sim(input, output) on ``context.batch`` (None for the
  first block when no embedding output is captured: it is then always kept)."""
  if not context.has_data:
    raise InputError("strategy 'influence' needs calibration data: the context has no "
                     "teacher/inputs")
  sim = {"cosine": token_cosine,
         "cka": lambda a, b: linear_cka(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]))}
  if measure not in sim:
    raise InputError(f"influence measure {measure!r}: use 'cosine' or 'cka'")
  names = layer_groups(teacher)
  _, captured = context.teacher.apply(context.teacher_params, context.batch, capture=True)
  outputs = layer_outputs(teacher, names, context, captured)
  first = next((np.asarray(captured[k]) for k in EMBEDDINGS
                if k in captured and np.shape(captured[k]) == outputs[0].shape), None)
  inputs = [first] + outputs[:-1]
  return [None if x is None else 1.0 - sim[measure](x, y) for x, y in zip(inputs, outputs)]


@STRATEGIES.register("influence")
def influence(teacher: Partition, student: Partition, context: Optional[Context] = None, *,
              measure: str = "cosine", keep: Sequence[int] = ()) -> tuple:
  """Student layer j copies the j-th (in depth order) of the teacher's most influential
  blocks; ``keep``: teacher blocks kept whatever their score (negative: from the end)."""
  scores = block_influence(teacher, context or Context(), measure)
  n, m = len(scores), len(layer_groups(student))
  if m > n:
    raise InputError(f"impossible target: the student has {m} layers, the teacher only {n}")
  forced = {i % n for i in keep} | {i for i, s in enumerate(scores) if s is None}
  if len(forced) > m:
    raise InputError(f"influence: keep={list(keep)} forces {len(forced)} blocks into a "
                     f"{m}-block student")
  ranked = sorted((i for i in range(n) if i not in forced), key=lambda i: -scores[i])
  plan = sorted(forced | set(ranked[:m - len(forced)]))
  groups, reused, info = fill_from_blocks(teacher, student, [[i] for i in plan], _first)
  return groups, reused, dict(info, teacher_layers=plan, measure=measure,
                              influence=[None if s is None else round(s, 6) for s in scores])
