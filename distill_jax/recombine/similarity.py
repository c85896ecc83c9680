"""``similarity``: merge (or drop) the most similar adjacent teacher layers first, by linear
CKA of layer outputs (Kornblith et al., 2019) or, without data, weight cosine; a block becomes
its members' mean ("merge") or its most representative member ("drop").
"""
import os
from typing import Callable, Optional

import jax
import numpy as np

from distill_jax.errors import InputError
from distill_jax.files import atomic, write_json
from distill_jax.partition import Partition
from distill_jax.recombine.context import Context
from distill_jax.recombine.strategies import (STRATEGIES, _first, _mean, fill_from_blocks,
                                              layer_groups)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
  """CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) for (B, d) activations."""
  x = x.reshape(len(x), -1).astype(np.float64)
  y = y.reshape(len(y), -1).astype(np.float64)
  x, y = x - x.mean(0), y - y.mean(0)
  if x.shape[1] + y.shape[1] > 2 * len(x):
    # Wide activations (a transformer layer's B x (L * H)): the same quantities through the
    # (B, B) Gram matrices, ||Y^T X||_F^2 = <X X^T, Y Y^T>_F and ||X^T X||_F = ||X X^T||_F.
    kx, ky = x @ x.T, y @ y.T
    denominator = np.linalg.norm(kx) * np.linalg.norm(ky)
    return float(np.sum(kx * ky) / denominator) if denominator > 0 else 0.0
  denominator = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
  return float(np.linalg.norm(y.T @ x) ** 2 / denominator) if denominator > 0 else 0.0


def weight_cosine(a: dict, b: dict) -> float:
  """Cosine of two layers' weights over the keys whose shapes agree; 0 if none do."""
  keys = [k for k in a if k in b and np.shape(a[k]) == np.shape(b[k])]
  if not keys:
    return 0.0
  u = np.concatenate([np.ravel(a[k]) for k in keys])
  v = np.concatenate([np.ravel(b[k]) for k in keys])
  return float(u @ v / max(np.linalg.norm(u) * np.linalg.norm(v), 1e-12))


def layer_outputs(teacher: Partition, names: list[str], context: Context,
                  captured: Optional[dict] = None) -> list[np.ndarray]:
  """Each layer group's module output on ``context.batch`` (the model's captured features;
  ``captured``: those of a forward pass already made)."""
  if captured is None:
    _, captured = context.teacher.apply(context.teacher_params, context.batch, capture=True)
  outputs = []
  for name in names:
    # The layer's module is the longest common prefix of its parameters' paths
    # (Dense_3/{kernel,bias} -> Dense_3; encoder/layer_2/attention/query/kernel... ->
    # encoder/layer_2).
    paths = [c.path.split("/")[:-1] for c in teacher.claims if c.group == name]
    module = "/".join(os.path.commonprefix(paths))   # element-wise over the components
    if module not in captured:
      raise InputError(f"no captured output {module!r} for layer group {name!r}; captured: "
                       f"{sorted(captured)[:8]}...")
    outputs.append(np.asarray(jax.device_get(captured[module])))
  return outputs


def similarity_matrix(teacher: Partition, context: Context,
                      measure: str = "auto") -> tuple[np.ndarray, str]:
  """(n, n) similarity of the teacher's layer groups and the measure used."""
  names = layer_groups(teacher)
  if measure == "auto":
    measure = "cka" if context.has_data else "cosine"
  if measure == "cka":
    if not context.has_data:
      raise InputError("similarity measure 'cka' needs data: the context has no teacher/inputs")
    feats = layer_outputs(teacher, names, context)
    pair = lambda i, j: linear_cka(feats[i], feats[j])
  elif measure == "cosine":
    pair = lambda i, j: weight_cosine(teacher.groups[names[i]], teacher.groups[names[j]])
  else:
    raise InputError(f"unknown similarity measure {measure!r}; use 'cka', 'cosine' or 'auto'")
  n = len(names)
  sim = np.eye(n)
  for i in range(n):
    for j in range(i + 1, n):
      sim[i, j] = sim[j, i] = pair(i, j)
  return sim, measure


def merge_adjacent(sim: np.ndarray, m: int,
                   compatible: Optional[Callable[[list, list], bool]] = None) -> list[list[int]]:
  """Greedily merge the most similar adjacent blocks of layers until ``m`` remain.

  A pair of blocks scores the mean similarity of their members. Pairs that ``compatible``
  rejects (e.g. layers of different shapes, which cannot be averaged) are merged only when no
  compatible pair is left.
  """
  n = len(sim)
  if not 1 <= m <= n:
    raise InputError(f"impossible target: the student has {m} layers, the teacher {n}")
  blocks = [[i] for i in range(n)]
  while len(blocks) > m:
    pairs = list(zip(blocks, blocks[1:]))
    scores = np.array([sim[np.ix_(a, b)].mean() for a, b in pairs])
    if compatible is not None:
      ok = np.array([compatible(a, b) for a, b in pairs])
      if ok.any():
        scores = np.where(ok, scores, -np.inf)
    k = int(np.argmax(scores))
    blocks[k:k + 2] = [blocks[k] + blocks[k + 1]]
  return blocks


def medoid_first(block: list[int], sim: np.ndarray) -> list[int]:
  """The block reordered so that the member most similar to the others comes first."""
  if len(block) <= 2:
    return block
  centre = max(block, key=lambda i: sim[i, block].sum())
  return [centre] + [i for i in block if i != centre]


def save_similarity(sim: np.ndarray, names: list[str], measure: str, blocks, workdir: str) -> None:
  """``similarity.json`` and a ``similarity.png`` heatmap in ``workdir``."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  write_json(os.path.join(workdir, "similarity.json"), {
      "layers": names, "measure": measure, "matrix": sim.round(6).tolist(), "blocks": blocks})
  fig, ax = plt.subplots(figsize=(5.5, 4.5))
  im = ax.imshow(sim, vmin=0, vmax=1, cmap="viridis")
  ticks = [n.replace("layer_", "") for n in names]
  ax.set(xticks=range(len(names)), xticklabels=ticks, yticks=range(len(names)),
         yticklabels=ticks, xlabel="teacher layer", ylabel="teacher layer",
         title=f"teacher layer similarity ({'CKA' if measure == 'cka' else 'weight cosine'})")
  fig.colorbar(im, ax=ax, label="similarity (0-1)")
  fig.tight_layout()
  with atomic(os.path.join(workdir, "similarity.png")) as tmp:
    fig.savefig(tmp, dpi=120)
  plt.close(fig)


@STRATEGIES.register("similarity")
def similarity(teacher: Partition, student: Partition, context: Optional[Context] = None, *,
               measure: str = "auto", mode: str = "merge") -> tuple:
  context = context or Context()
  if mode not in ("merge", "drop"):
    raise InputError(f"similarity mode {mode!r}: use 'merge' or 'drop'")
  sim, used = similarity_matrix(teacher, context, measure)
  names = layer_groups(teacher)
  shapes = [tuple(sorted((k, np.shape(v)) for k, v in teacher.groups[n].items())) for n in names]
  same_shapes = lambda a, b: len({shapes[i] for i in a + b}) == 1
  blocks = merge_adjacent(sim, len(layer_groups(student)), same_shapes)
  if mode == "drop":  # keep the most representative layer of each block
    blocks = [medoid_first(b, sim) for b in blocks]
  if context.workdir:
    save_similarity(sim, layer_groups(teacher), used, blocks, context.workdir)
  groups, reused, info = fill_from_blocks(teacher, student, blocks,
                                          _mean if mode == "merge" else _first)
  info = dict(info, blocks=blocks, measure=used, mode=mode)
  if mode == "drop":
    info["teacher_layers"] = [b[0] for b in blocks]
  return groups, reused, info
