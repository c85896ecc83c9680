"""Batched inference: a model's outputs for every row of a dataset, in sharded, padded batches
(evaluation, the teacher cache, the choice among plans), optionally in an order that groups
rows of similar length, and the top-k selection that keeps an LM's logits small.
"""
import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from distill_jax import sharding
from distill_jax.errors import InputError


def top_k(logits: jnp.ndarray, k: int) -> dict:
  """The ``k`` largest logits (descending; ties: the lower id first) and their ids."""
  if not 1 <= k <= logits.shape[-1]:
    raise InputError(f"distill.cache_topk={k} must be in [1, {logits.shape[-1]}] (the "
                     "teacher's number of classes / vocabulary)")
  values, indices = jax.lax.top_k(logits, k)
  return {"topk_values": values, "topk_indices": indices.astype(jnp.int32)}


@functools.lru_cache(maxsize=32)
def _forward(model, outputs: tuple, mesh: Mesh, topk: int = 0):
  """One jitted forward per (model, outputs, mesh, topk): repeated predictions reuse
  compilations. ``topk``: the logits leave the device as their top k only."""
  def forward(p, b):
    out = model.apply(p, b)[0]
    got = {k: out[k] for k in outputs if not (topk and k == "logits")}
    return dict(got, **top_k(out["logits"], topk)) if topk else got
  return jax.jit(forward, out_shardings=sharding.replicated(mesh))


def length_order(arrays: Any) -> Optional[np.ndarray]:
  """Rows of token arrays by length (their ``attention_mask``'s sum), for :func:`predict`:
  sorted batches pad to their own longest row (after ``prepare`` trims the padding), not to the
  longest of a random batch. None for arrays without a mask."""
  if not isinstance(arrays, dict) or "attention_mask" not in arrays:
    return None
  return np.argsort(np.asarray(arrays["attention_mask"]).sum(-1), kind="stable")


def predict(model, params: Any, arrays: dict, mesh: Mesh, batch_size: int = 512,
            prepare=lambda batch: batch, outputs: Sequence[str] = ("logits",),
            topk: int = 0, order: Optional[np.ndarray] = None, desc: str = "",
            batches: Optional[Sequence[tuple[int, int]]] = None) -> dict:
  """The model's ``outputs`` for every example of ``arrays`` (numpy, in order), computed in
  sharded, padded batches; every process passes the same arrays and gets all outputs back.
  ``prepare`` maps each batch before the model sees it (e.g. cutting padding columns).
  ``topk > 0``: the logits come back as ``topk_values`` and ``topk_indices`` (computed on the
  device: an LM's (N, L, vocabulary) logits would not fit in memory). ``arrays`` may also be
  rows read on demand (``len`` and ``take(idx) -> dict``: a streamed held-out set, read a batch
  at a time). ``order``: a permutation of the rows to compute them in (e.g.
  :func:`length_order`); the outputs come back in the rows' own order all the same. ``desc``:
  a progress bar with this label (for long passes, e.g. the teacher cache). ``batches``:
  ``(start, rows)`` spans over the ordered rows, for batches whose size changes (e.g. bounded
  by tokens, :func:`~distill_jax.tasks.sentence_embedding.length_batches`); by default
  ``batch_size`` rows each."""
  forward = _forward(model, tuple(outputs), mesh, topk)
  outputs = [k for k in outputs if not (topk and k == "logits")] + (
      ["topk_values", "topk_indices"] if topk else [])
  ways = sharding.batch_size_per_step(mesh)
  take = getattr(arrays, "take", None) or (lambda idx: {k: v[idx] for k, v in arrays.items()})
  n = len(arrays) if hasattr(arrays, "take") else len(next(iter(arrays.values())))
  rows = np.arange(n) if order is None else np.asarray(order)
  if rows.shape != (n,) or not np.array_equal(np.sort(rows), np.arange(n)):
    raise InputError(f"predict: order must be a permutation of the {n} rows")
  step = -(-batch_size // ways) * ways
  spans = batches if batches is not None else [(s, step) for s in range(0, n, step)]
  parts: dict = {k: [] for k in outputs}
  if desc and jax.process_index() == 0:
    from tqdm.auto import tqdm
    spans = tqdm(spans, desc=desc, unit="batch", mininterval=5.0)
  for start, count in spans:
    size = -(-count // ways) * ways            # every device gets the same number of rows
    idx = rows[np.minimum(np.arange(start, start + size), n - 1)]   # the last repeats a row
    batch = prepare(take(idx))
    out = forward(params, sharding.shard_batch(sharding.process_batch(batch), mesh))
    for k, v in jax.device_get(out).items():
      parts[k].append(np.asarray(v)[:min(count, n - start)])
  back = None if order is None else np.argsort(rows)     # computed row -> its own position
  return {k: np.concatenate(v) if back is None else np.concatenate(v)[back]
          for k, v in parts.items()}
