"""Linear stitching layers initialised by least squares (SN-Net, Pan et al. 2023; model
stitching, Bansal et al. 2021): ``y ~ x W + b`` fitted on calibration activations.
"""
from typing import Any, Sequence

import jax
import numpy as np

from distill_jax.blockwise.layout import as_stitched, kept, stem_and_head
from distill_jax.errors import InputError
from distill_jax.models.stack import Stitched, frozen_base


def least_squares(x: np.ndarray, y: np.ndarray, ridge: float = 1e-6) -> tuple[np.ndarray,
                                                                               np.ndarray]:
  """``(W, b)`` minimising ``||x W + b - y||^2 + ridge ||W||^2`` (rows are examples or
  tokens), solved in float64; ``ridge`` (relative to the mean squared input) keeps a
  rank-deficient ``x`` solvable."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
    raise InputError(f"least squares needs (n, d_in) and (n, d_out) activations; got {x.shape} "
                     f"and {y.shape}")
  xm, ym = x.mean(0), y.mean(0)
  xc = x - xm
  gram = xc.T @ xc
  gram[np.diag_indices_from(gram)] += ridge * max(np.trace(gram) / len(gram), 1e-12)
  w = np.linalg.solve(gram, xc.T @ (y - ym))
  return w.astype(np.float32), (ym - xm @ w).astype(np.float32)


def rows(h: Any, mask: Any = None) -> np.ndarray:
  """Hidden states as rows: (B, D) as is; (B, L, D) as its real tokens (``mask`` = 1)."""
  h = np.asarray(h, np.float32)
  if h.ndim == 2:
    return h
  flat = h.reshape(-1, h.shape[-1])
  return flat if mask is None else flat[np.asarray(mask).reshape(-1) > 0]


def identity(width: int) -> dict:
  return {"kernel": np.eye(width, dtype=np.float32), "bias": np.zeros(width, np.float32)}


def fit_stitches(student, params: dict, t, groups: Sequence[Sequence[int]], sample: dict) -> dict:
  """Each stitch of ``student`` (a ``<family>_stitched`` model) fitted in order on ``sample``:
  stitch ``j`` maps the student's own hidden state leaving block ``j`` (with the stitches
  before it in place) to the teacher's at the same boundary, so it also absorbs the error the
  blocks before it accumulated."""
  stitch = student.module.stitch
  if not any(stitch):
    return params
  inputs = [sample[k] for k in t.view.inputs]
  mask = sample.get(t.view.mask_key) if t.view.mask_key else None
  module, tparams = as_stitched(t, groups, head=False)
  target = module.apply({"params": tparams}, *inputs, boundaries=True)
  params = dict(params)
  for j, on in enumerate(stitch):
    if not on:
      continue
    width = np.shape(target[j + 1])[-1]
    params[f"stitch_{j}"] = identity(width)     # the stitch's input: block j's own output
    seen = student.module.apply({"params": params}, *inputs, boundaries=True)
    w, b = least_squares(rows(seen[j + 1], mask), rows(target[j + 1], mask))
    params[f"stitch_{j}"] = {"kernel": w, "bias": b}
  return jax.tree.map(np.asarray, params)


def stitch_models(t_a, t_b, cut: int, sample: dict) -> tuple:
  """Model stitching: ``(module, params)`` of model A's stem and layers ``< cut``, a linear
  stitch, then model B's layers ``>= cut`` and head (A and B: :class:`layout.Teacher` views of
  two models of one family, e.g. two seeds, or two widths). The stitch maps A's hidden state at
  the cut to B's (their widths may differ) and is fitted by least squares on ``sample``; train
  it further with everything else frozen (``frozen=(r"(?!stitch_).*",)``). A head tied to the
  stem's embedding (Llama) reads A's embedding, so tied models must share a width."""
  if t_a.family != t_b.family or not (0 < cut < t_a.depth and cut < t_b.depth):
    raise InputError(f"stitching needs two models of one family and 0 < cut < both depths; got "
                     f"{t_a.family} ({t_a.depth} layers), {t_b.family} ({t_b.depth} layers), cut "
                     f"{cut}")
  groups = (tuple(range(cut)), tuple(range(cut, t_b.depth)))
  bases = () if t_a.base == t_b.base else (frozen_base(t_a.base), frozen_base(t_b.base))
  module = Stitched(t_a.family, frozen_base(t_a.base), ("keep", "keep"), groups, (True, False),
                    bases)
  inputs = [sample[k] for k in t_a.view.inputs]
  mask = sample.get(t_a.view.mask_key) if t_a.view.mask_key else None
  at_cut = lambda t: (lambda m, p: m.apply({"params": p}, *inputs, boundaries=True)[1])(
      *as_stitched(t, (tuple(range(cut)),), head=False))
  w, b = least_squares(rows(at_cut(t_a), mask), rows(at_cut(t_b), mask))
  head = {k: v for k, v in stem_and_head(t_b).items() if k not in t_b.view.stem_names}
  params = {**{n: t_a.params[n] for n in t_a.view.stem_names},
            "block_0": kept(t_a, groups[0]), "stitch_0": {"kernel": w, "bias": b},
            "block_1": kept(t_b, groups[1]), **head}
  return module, params
