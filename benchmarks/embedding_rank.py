r"""How much a factorised token table costs all-MiniLM-L6-v2 before any training: the teacher
with its (30522, 384) table replaced by a rank-r table and a (r, 384) projection, split by the
plain truncated SVD or weighted by calibration token counts (``recombine/factorize.py``).

  python benchmarks/embedding_rank.py [--data=../shared/data/stsbenchmark/sts-train.csv]

Calibration: the first 2,000 of the shuffled (seed 0) unique sentences of --data (default: the
211 fixture sentences, all of them); agreement: the mean cosine of the factorised model's
sentence vectors with the teacher's on the next 600 (default: the same 211, which flatters the
weighted split). Also prints both relative errors of the table. Not a speed measurement; it
lives here as the other measurement scripts do.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.encode import load_sentences  # noqa: E402
from distill_jax import models, sharding  # noqa: E402
from distill_jax.recombine.factorize import (relative_error, token_counts,  # noqa: E402
                                             truncated_svd, weighted_split)
from distill_jax.tasks.sentence_embedding import embed  # noqa: E402
from distill_jax.text import minilm  # noqa: E402
from distill_jax.text.tokenize import TextTokenizer  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data", default=None, help="an STS-benchmark CSV (its sentences)")
  parser.add_argument("--ranks", default="96,128,192,256")
  args = parser.parse_args()
  config, params, tokenizer_file = minilm.load_minilm()
  tokenizer = TextTokenizer(tokenizer_file)
  sentences, source = load_sentences(args.data, 0)
  if args.data:
    np.random.default_rng(0).shuffle(sentences)
    calibration, held_out = sentences[:2000], sentences[2000:2600]
  else:
    calibration = held_out = sentences
  print(f"calibration: {len(calibration)} sentences, agreement on {len(held_out)}, from {source}")
  mesh = sharding.make_mesh()
  encode = lambda cfg, p: embed(models.build(cfg, {}), p, tokenizer, held_out, mesh=mesh)
  reference = encode(config, params)
  table = np.asarray(params["embeddings"]["word_embeddings"]["embedding"])
  counts = token_counts(tokenizer.encode(calibration, 128), table.shape[0])
  for rank in map(int, args.ranks.split(",")):
    for how in ("plain", "weighted"):
      narrow, projection = (truncated_svd(table, rank)[:2] if how == "plain"
                            else weighted_split(table, rank, counts))
      embeddings = dict(params["embeddings"], word_embeddings={"embedding": narrow},
                        word_projection={"kernel": projection})
      vectors = encode(dict(config, embedding_rank=rank),
                       jax.device_put(dict(params, embeddings=embeddings)))
      print(f"rank {rank:>3} {how:<8}: agreement {np.mean(np.sum(vectors * reference, 1)):.4f}; "
            f"relative error {relative_error(table, narrow, projection):.3f}, weighted by the "
            f"calibration tokens {relative_error(table, narrow, projection, counts):.3f}",
            flush=True)


if __name__ == "__main__":
  main()
