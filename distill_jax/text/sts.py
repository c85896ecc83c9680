"""STS-benchmark: the pairs, Spearman correlation, and the score of a sentence encoder
(Spearman x100 of the embeddings' cosine against the gold 0..5 scores).
"""
import csv
import math
from typing import Callable, NamedTuple, Sequence

import numpy as np

from distill_jax.errors import InputError

COLUMNS = ("genre", "file", "year", "id", "score", "sentence1", "sentence2")


class StsPairs(NamedTuple):
  sentence1: list[str]
  sentence2: list[str]
  scores: np.ndarray       # float64 gold similarity, 0..5

  def __len__(self) -> int:
    return len(self.scores)


def read_sts_csv(path: str) -> StsPairs:
  """The pairs of an STS-benchmark file (``sts-dev.csv`` ...).

  Tab separated: genre, file, year, id, score, sentence1, sentence2. Sentences contain
  quotes, so no quoting is honoured (``QUOTE_NONE``); some lines carry extra tab-separated
  source fields after sentence2, which are ignored.
  """
  s1, s2, scores = [], [], []
  with open(path, encoding="utf-8", newline="") as f:
    for lineno, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
      if not row or not any(row):
        continue
      if len(row) < len(COLUMNS):
        raise InputError(f"{path}:{lineno}: {len(row)} tab-separated fields, expected at "
                         f"least {len(COLUMNS)} ({', '.join(COLUMNS)})")
      try:
        score = float(row[4])
      except ValueError:
        score = float("nan")
      if not math.isfinite(score):
        raise InputError(f"{path}:{lineno}: score {row[4]!r} is not a finite number")
      scores.append(score)
      s1.append(row[5])
      s2.append(row[6])
  if not scores:
    raise InputError(f"{path}: no STS pairs")
  return StsPairs(s1, s2, np.asarray(scores, np.float64))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
  """Spearman's rho (ties get average ranks; NaN if either is constant)."""
  from scipy.stats import spearmanr        # scipy comes with scikit-learn
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.shape != y.shape or x.ndim != 1:
    raise InputError(f"spearman needs two 1-D arrays of one length, got {x.shape} and {y.shape}")
  if not (np.isfinite(x).all() and np.isfinite(y).all()):
    raise InputError("spearman: input contains NaN or inf")
  return float(spearmanr(x, y).statistic)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Row-wise cosine similarity (embeddings need not be normalised)."""
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
  return (a * b).sum(axis=1) / norms


def sts_score(embed_fn: Callable[[list[str]], np.ndarray], pairs: StsPairs) -> float:
  """Spearman x100 of cosine(embed(sentence1), embed(sentence2)) against the gold scores.

  ``embed_fn`` maps a list of sentences to an (N, D) array; each distinct sentence is
  embedded once.
  """
  unique = sorted(set(pairs.sentence1) | set(pairs.sentence2))
  emb = np.asarray(embed_fn(unique))
  if emb.shape[0] != len(unique) or emb.ndim != 2:
    raise InputError(f"embed_fn returned shape {emb.shape} for {len(unique)} sentences")
  index = {s: i for i, s in enumerate(unique)}
  a = emb[[index[s] for s in pairs.sentence1]]
  b = emb[[index[s] for s in pairs.sentence2]]
  return 100.0 * spearman(cosine(a, b), pairs.scores)
