"""STS-benchmark: reading the pairs, Spearman correlation, and scoring a sentence encoder.

The score is the usual one for sentence embeddings: Spearman's rank correlation (x100)
between the cosine similarity of the two sentences' embeddings and the gold 0..5 score.
"""
import csv
from typing import Callable, NamedTuple, Sequence

import numpy as np

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
        raise ValueError(f"{path}:{lineno}: {len(row)} tab-separated fields, expected at "
                         f"least {len(COLUMNS)} ({', '.join(COLUMNS)})")
      try:
        score = float(row[4])
      except ValueError:
        raise ValueError(f"{path}:{lineno}: score {row[4]!r} is not a number") from None
      scores.append(score)
      s1.append(row[5])
      s2.append(row[6])
  if not scores:
    raise ValueError(f"{path}: no STS pairs")
  return StsPairs(s1, s2, np.asarray(scores, np.float64))


def rankdata(x: Sequence[float]) -> np.ndarray:
  """Ranks 1..n, ties getting the average of the ranks they span (scipy's "average")."""
  x = np.asarray(x, np.float64)
  if x.ndim != 1:
    raise ValueError(f"rankdata needs a 1-D array, got shape {x.shape}")
  order = np.argsort(x, kind="mergesort")
  sorted_x = x[order]
  # Starts of runs of equal values, plus the end; a run [a, b) gets rank (a + 1 + b) / 2.
  bounds = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1], True])
  run_ranks = (bounds[:-1] + 1 + bounds[1:]) / 2.0
  ranks = np.empty(len(x), np.float64)
  ranks[order] = np.repeat(run_ranks, np.diff(bounds))
  return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
  x, y = x - x.mean(), y - y.mean()
  denom = np.sqrt((x * x).sum() * (y * y).sum())
  return float((x * y).sum() / denom) if denom > 0 else float("nan")


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
  """Spearman's rho: Pearson correlation of the average ranks (NaN if either is constant)."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.shape != y.shape or x.ndim != 1:
    raise ValueError(f"spearman needs two 1-D arrays of one length, got {x.shape} and {y.shape}")
  if np.isnan(x).any() or np.isnan(y).any():
    raise ValueError("spearman: input contains NaN")
  return pearson(rankdata(x), rankdata(y))


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
    raise ValueError(f"embed_fn returned shape {emb.shape} for {len(unique)} sentences")
  index = {s: i for i, s in enumerate(unique)}
  a = emb[[index[s] for s in pairs.sentence1]]
  b = emb[[index[s] for s in pairs.sentence2]]
  return 100.0 * spearman(cosine(a, b), pairs.scores)
