"""Plain text for causal language models: tokenised once (cached, keyed by the tokenizer and
the file's content), split into a training part and a held-out tail, packed into fixed-length
sequences, and cut into strided windows for perplexity. Tokenizers are ``tokenizers``
objects; :func:`char_tokenizer` builds a character-level one from a text.
"""
import hashlib
import os
from typing import Optional

import numpy as np
import tokenizers

from distill_jax.errors import InputError, MissingInput
from distill_jax.files import atomic


def read_text(path: str, what: str = "data.path") -> str:
  if not path or not os.path.isfile(path):
    raise MissingInput(f"{what}: text file {path!r} does not exist")
  with open(path, encoding="utf-8") as f:
    text = f.read()
  if not text.strip():
    raise InputError(f"{what}: {path!r} holds no text")
  return text


def char_tokenizer(text: str) -> tokenizers.Tokenizer:
  """One token per distinct character of ``text`` (ids in sorted character order, as
  nanoGPT's shakespeare_char), as a ``tokenizers`` object so it saves and reloads like any."""
  chars = sorted(set(text))
  tok = tokenizers.Tokenizer(tokenizers.models.BPE({c: i for i, c in enumerate(chars)}, []))
  tok.decoder = tokenizers.decoders.Fuse()
  return tok


def tokenizer_id(tokenizer: tokenizers.Tokenizer) -> str:
  return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()[:16]


def cache_dir() -> str:
  """``$DISTILL_JAX_CACHE`` or ``~/.cache/distill_jax``: token caches outlive a workdir."""
  return os.environ.get("DISTILL_JAX_CACHE") or os.path.join(
      os.path.expanduser("~"), ".cache", "distill_jax")


def tokenize(text: str, tokenizer: tokenizers.Tokenizer, documents: str = "raw",
             eos_id: Optional[int] = None, cache: bool = True) -> np.ndarray:
  """The token ids (int32) of ``text``. ``documents="lines"``: one document a line, each
  followed by ``eos_id``; ``"raw"``: one stream (encoded line by line, newlines kept, so long
  files stay fast). Cached under :func:`cache_dir` by (tokenizer, text, documents, eos)."""
  if documents not in ("raw", "lines"):
    raise InputError(f"data.documents={documents!r}: use 'raw' or 'lines'")
  if documents == "lines" and eos_id is None:
    raise InputError("data.documents='lines' needs an end-of-document token; this tokenizer "
                     "has none (use 'raw')")
  key = hashlib.sha256(f"{tokenizer_id(tokenizer)}|{documents}|{eos_id}|".encode()
                       + text.encode()).hexdigest()[:24]
  path = os.path.join(cache_dir(), "tokens", f"{key}.npy")
  if cache and os.path.isfile(path):
    try:
      return np.load(path)
    except (ValueError, OSError):
      pass                                   # a damaged cache file is rebuilt
  if documents == "lines":
    lines = [line for line in text.splitlines() if line.strip()]
    ids = [i for enc in tokenizer.encode_batch(lines, add_special_tokens=False)
           for i in enc.ids + [eos_id]]
  else:
    lines = text.splitlines(keepends=True)
    ids = [i for enc in tokenizer.encode_batch(lines, add_special_tokens=False) for i in enc.ids]
  out = np.asarray(ids, np.int32)
  if cache:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic(path) as tmp:
      with open(tmp, "wb") as f:
        np.save(f, out)
  return out


def split(ids: np.ndarray, held_out: float) -> tuple[np.ndarray, np.ndarray]:
  """(training part, held-out tail): the last ``held_out`` fraction is held out."""
  if not 0 < held_out < 1:
    raise InputError(f"data.test_fraction={held_out}: must be in (0, 1) to hold out text")
  cut = int(round(len(ids) * (1 - held_out)))
  return ids[:cut], ids[cut:]


def pack(ids: np.ndarray, length: int) -> np.ndarray:
  """(N, length + 1) sequences: row i is ``ids[i*length : i*length + length + 1]`` (inputs
  and next-token targets overlap by one token); the remainder is dropped."""
  n = (len(ids) - 1) // length
  if n < 1:
    raise InputError(f"data.max_length={length}: the text has only {len(ids)} tokens, too few "
                     "for one training sequence")
  return np.stack([ids[i * length:i * length + length + 1] for i in range(n)])


def windows(ids: np.ndarray, length: int, stride: int) -> dict[str, np.ndarray]:
  """Strided perplexity windows (Hugging Face's recipe): ``tokens``/``y`` (K, length) and a
  0/1 ``weight`` marking the targets each window scores, so every target after the first
  token is scored exactly once, with up to ``length - stride`` tokens of context."""
  if not 0 < stride <= length:
    raise InputError(f"data.eval_stride={stride}: must be in [1, data.eval_max_length={length}]")
  length = min(length, len(ids) - 1)
  if length < 1:
    raise InputError("held-out text has fewer than 2 tokens")
  starts = list(range(0, len(ids) - 1 - length + 1, stride))
  if starts[-1] + length < len(ids) - 1:
    starts.append(len(ids) - 1 - length)
  tokens = np.stack([ids[s:s + length] for s in starts])
  y = np.stack([ids[s + 1:s + length + 1] for s in starts])
  weight = np.zeros_like(tokens, np.float32)
  scored = 0                                  # targets ids[1..scored] are scored already
  for k, s in enumerate(starts):
    first = max(scored - s, 0)                # target position j predicts ids[s + j + 1]
    weight[k, first:] = 1.0
    scored = s + length
  return {"tokens": tokens, "y": y, "weight": weight}
