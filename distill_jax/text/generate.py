"""Sampling from a causal LM with its key/value cache, jitted end to end: one prefill pass over
the (left-padded) prompts, then one ``lax.scan`` step per new token. Greedy, temperature,
top-k and top-p; batched prompts of different lengths; randomness from an explicit key folded
in by step.
"""
import functools
import time
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.errors import InputError
from distill_jax.models.llama import empty_cache


def filter_logits(logits: jnp.ndarray, temperature, top_k, top_p) -> jnp.ndarray:
  """Logits scaled by ``1/temperature`` with everything outside the ``top_k`` largest (0: no
  limit) and outside the smallest set whose probability reaches ``top_p`` set to -inf."""
  logits = logits / jnp.maximum(temperature, 1e-6)
  ordered = jnp.sort(logits, axis=-1)[..., ::-1]
  kth = jnp.where(top_k > 0, jnp.take(ordered, jnp.maximum(top_k - 1, 0), axis=-1)[..., None],
                  -jnp.inf)
  probs = jax.nn.softmax(ordered, axis=-1)
  # Keep a token while the probability mass before it is below top_p (the first always).
  kept = (jnp.cumsum(probs, axis=-1) - probs) < top_p
  cutoff = jnp.min(jnp.where(kept, ordered, jnp.inf), axis=-1, keepdims=True)
  return jnp.where((logits >= kth) & (logits >= cutoff), logits, -jnp.inf)


@functools.partial(jax.jit, static_argnames=("module", "steps"))
def sample_ids(module, params, tokens, mask, rng, temperature, top_k, top_p, *, steps: int):
  """``steps`` new ids (B, steps) after prompts ``tokens`` (B, P; ``mask`` 1 on real tokens,
  left padding 0) of the linen ``module``: jitted, and traceable inside another jitted function
  (on-policy distillation samples inside the train step)."""
  batch, prompt = tokens.shape
  cache = empty_cache(module.config, batch, prompt + steps)
  key_mask = jnp.concatenate([mask, jnp.zeros((batch, steps), mask.dtype)], axis=1)
  positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
  logits, cache = module.apply({"params": params}, tokens, positions, key_mask, cache, 0)

  def pick(logits, step):
    # A branch, not a select: greedy decoding skips the filter's sort of the vocabulary (a
    # quarter of a SmolLM2 step on CPU).
    return jax.lax.cond(
        temperature > 0,
        lambda l: jax.random.categorical(jax.random.fold_in(rng, step),
                                         filter_logits(l, temperature, top_k, top_p)),
        lambda l: jnp.argmax(l, axis=-1).astype(jnp.int32), logits)

  def step(carry, t):
    logits, cache, key_mask = carry
    token = pick(logits, t)
    key_mask = key_mask.at[:, prompt + t].set(1)
    pos = positions[:, -1:] + 1 + t
    logits, cache = module.apply({"params": params}, token[:, None], pos, key_mask, cache,
                                 prompt + t)
    return (logits[:, -1], cache, key_mask), token

  _, new = jax.lax.scan(step, (logits[:, -1], cache, key_mask), jnp.arange(steps))
  return new.T


def _abstract(x):
  return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=getattr(x, "sharding", None))


@functools.lru_cache(maxsize=16)
def _compiled(module, steps: int, treedef, leaves: tuple):
  """The generation program, compiled ahead of time for these argument shapes (so a timing
  never includes compilation)."""
  return sample_ids.lower(module, *jax.tree.unflatten(treedef, leaves), steps=steps).compile()


def generate(model, params: Any, prompts: Sequence[Sequence[int]], steps: int,
             rng: Optional[jax.Array] = None, temperature: float = 0.0, top_k: int = 0,
             top_p: float = 1.0, eos_id: Optional[int] = None, pad_to: int = 16,
             timing: Optional[dict] = None) -> list:
  """``steps`` new token ids per prompt (cut after ``eos_id``, which is kept). ``temperature``
  0 is greedy; prompts are left-padded to a multiple of ``pad_to`` (fewer recompilations).
  ``timing``: receives ``seconds`` (the generation alone, compiled beforehand) and
  ``tokens_per_s`` (prompts x steps / seconds)."""
  if not prompts or any(len(p) == 0 for p in prompts):
    raise InputError("generate: every prompt needs at least one token")
  if temperature < 0 or not 0 < top_p <= 1 or top_k < 0 or steps < 1:
    raise InputError(f"generate: need steps >= 1, temperature >= 0, top_k >= 0, "
                     f"0 < top_p <= 1 (got {steps}, {temperature}, {top_k}, {top_p})")
  module = getattr(model, "module", model)
  length = -(-max(len(p) for p in prompts) // pad_to) * pad_to
  tokens = np.zeros((len(prompts), length), np.int32)
  mask = np.zeros((len(prompts), length), np.int32)
  for i, p in enumerate(prompts):
    tokens[i, length - len(p):], mask[i, length - len(p):] = p, 1
  args = (params, tokens, mask, jax.random.PRNGKey(0) if rng is None else rng,
          np.float32(temperature), np.int32(top_k), np.float32(top_p))
  leaves, treedef = jax.tree.flatten(args)
  run = _compiled(module, steps, treedef, tuple(map(_abstract, leaves)))
  start = time.perf_counter()
  new = np.asarray(run(*args))
  if timing is not None:
    timing["seconds"] = time.perf_counter() - start
    timing["tokens_per_s"] = new.size / timing["seconds"]
  out = []
  for row in new.tolist():
    if eos_id is not None and eos_id in row:
      row = row[:row.index(eos_id) + 1]
    out.append(row)
  return out
