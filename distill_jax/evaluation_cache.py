"""Evaluations remembered across runs (``eval_cache=True``): a sweep's variants that share a
teacher or a starting point evaluate it once.
"""
import os
from typing import Any, Callable

import jax

from distill_jax import plans
from distill_jax.files import write_json
from distill_jax.paths import fingerprint
from distill_jax.text.corpus import cache_dir


def memoized(evaluate: Callable[[Any], dict], run, model, reference: Any) -> Callable:
  """``evaluate`` remembered in ``$DISTILL_JAX_CACHE/evaluations`` under the parameters' and
  the reference's fingerprints, the model, data and evaluation settings: a sweep's variants
  that share a teacher or a starting point evaluate it once. Timings are those of the first
  evaluation."""
  c = run.config
  arrays = [leaf for leaf in jax.tree.leaves(reference) if hasattr(leaf, "shape")]
  ref_id = (fingerprint(arrays), [getattr(leaf, "config", None)
                                  for leaf in jax.tree.leaves(reference)])

  def wrapped(params):
    key = plans.key_of(model.config, c.task, c.data, c.generate, c.eval_batch_size, c.seed,
                       dict(run.data.identity), fingerprint(params), ref_id)
    path = os.path.join(cache_dir(), "evaluations", key[:32] + ".json")
    saved = plans.read_result(path)
    if saved and saved["key"] == key:
      return saved["result"]
    result = evaluate(params)
    if jax.process_index() == 0:
      write_json(path, {"key": key, "result": result})
    return result
  return wrapped
