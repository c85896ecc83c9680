"""Batched WordPiece tokenisation as int32 numpy arrays; truncation and padding set on every
call (the file's own, all-MiniLM-L6-v2's 128, would be wrong).
"""
import os
from typing import Sequence

import numpy as np

from distill_jax.errors import InputError, MissingInput

class TextTokenizer:
  """A ``tokenizers.Tokenizer`` with explicit truncation and our own padding."""

  def __init__(self, tokenizer_json: str, pad_id: int = 0):
    from tokenizers import Tokenizer
    if os.path.isdir(tokenizer_json):
      tokenizer_json = os.path.join(tokenizer_json, "tokenizer.json")
    if not os.path.isfile(tokenizer_json):
      raise MissingInput(f"no tokenizer file at {tokenizer_json!r}")
    self.path = tokenizer_json
    self.tokenizer = Tokenizer.from_file(tokenizer_json)
    self.tokenizer.no_padding()  # we pad (below); the file's fixed 128 would be wrong here
    self.pad_id = pad_id
    self._truncation = None

  def encode(self, texts: Sequence[str], max_length: int = 256,
             padding: str = "longest") -> dict[str, np.ndarray]:
    """``input_ids``, ``attention_mask``, ``token_type_ids``: (len(texts), L) int32, L the
    longest row's length (``padding="longest"``) or ``max_length``."""
    if isinstance(texts, str):
      raise TypeError("encode takes a list of texts, not one string")
    if max_length < 2:
      raise InputError(f"max_length={max_length}: needs room for [CLS] and [SEP]")
    if self._truncation != max_length:
      self.tokenizer.enable_truncation(max_length=max_length)
      self._truncation = max_length
    encodings = self.tokenizer.encode_batch(list(texts))
    longest = max((len(e.ids) for e in encodings), default=1)
    length = max_length if padding == "max_length" else longest
    batch = {"input_ids": np.full((len(encodings), length), self.pad_id, np.int32),
             "attention_mask": np.zeros((len(encodings), length), np.int32),
             "token_type_ids": np.zeros((len(encodings), length), np.int32)}
    for row, e in enumerate(encodings):
      n = len(e.ids)
      batch["input_ids"][row, :n] = e.ids
      batch["attention_mask"][row, :n] = 1
      batch["token_type_ids"][row, :n] = e.type_ids
    return batch
