r"""Sentence-classification speed of exported models (teacher and students), one process.

  python benchmarks/classify_speed.py --data=DIR/dev.tsv \
      --models=runs/sst2/teacher/export,runs/sst2/student/export,runs/sst2_cnn/student/export

Each model classifies every sentence of ``--data`` (a GLUE-layout TSV): tokenisation with the
tokenizer.json in its export, length-sorted batches of ``--batch`` trimmed to their longest row
(rounded up to 16), the jitted forward, the logits back as numpy. Compiled beforehand (one
untimed pass). ``--rounds`` rounds alternate the models, since this VM's speed drifts; printed:
the median sentences/s, the ratio to the first model, and each model's accuracy on the data.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from distill_jax import models, sharding  # noqa: E402
from distill_jax.checkpoint import load_export_params, read_export_meta  # noqa: E402
from distill_jax.paths import count_params  # noqa: E402
from distill_jax.tasks.sentence_embedding import predict_by_length  # noqa: E402
from distill_jax.tasks.text_classification import read_tsv  # noqa: E402
from distill_jax.text.tokenize import TextTokenizer  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data", required=True, help="a GLUE-layout TSV (sentence, label)")
  parser.add_argument("--models", required=True, help="comma-separated export directories")
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--max_length", type=int, default=64)
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args()
  sentences, labels = read_tsv(args.data)
  mesh = sharding.make_mesh()
  runs = []
  for directory in args.models.split(","):
    meta = read_export_meta(directory)
    tokenizer = TextTokenizer(os.path.join(directory, "tokenizer.json"))
    example = tokenizer.encode(sentences[:2], args.max_length)
    model = models.build(meta["model"], meta["info"])
    inputs = {k: example[k] for k in model.family.inputs}
    params = load_export_params(directory, model, inputs)

    def classify(model=model, params=params, tokenizer=tokenizer) -> np.ndarray:
      tokens = tokenizer.encode(sentences, args.max_length, padding="max_length")
      return predict_by_length(model, params, {k: tokens[k] for k in model.family.inputs},
                               mesh, args.batch, "logits")
    accuracy = float(np.mean(np.argmax(classify(), -1) == labels))    # also compiles
    runs.append({"name": directory, "model": meta["model"]["name"], "fn": classify,
                 "params": count_params(params), "accuracy": accuracy, "rates": []})
  for _ in range(args.rounds):
    for r in runs:
      start = time.perf_counter()
      r["fn"]()
      r["rates"].append(len(sentences) / (time.perf_counter() - start))
  base = np.median(runs[0]["rates"])
  print(f"{len(sentences)} sentences of {args.data}; batch {args.batch}; {os.cpu_count()} "
        f"cores; median of {args.rounds} rounds\n")
  print("| model | export | params | accuracy | sentences/s | vs the first |")
  print("|---|---|---|---|---|---|")
  for r in runs:
    rate = np.median(r["rates"])
    print(f"| {r['model']} | {r['name']} | {r['params']:,} | {r['accuracy']:.4f} | "
          f"{rate:,.0f} | {rate / base:.2f}x |")


if __name__ == "__main__":
  main()
