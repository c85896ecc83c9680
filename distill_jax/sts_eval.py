r"""STS-benchmark Spearman (x100) of a sentence encoder; the score is the last line printed.

  python -m distill_jax.sts_eval --model=minilm --data=../shared/data/stsbenchmark/sts-dev.csv
  python -m distill_jax.sts_eval --model=WORKDIR/student --data=tfds:glue/stsb

--model: ``minilm`` (the packaged all-MiniLM-L6-v2 teacher), a directory written by
``distill_jax.text.student.save_student``, or a HF safetensors folder.
--data: an STS-benchmark CSV, or ``tfds:glue/stsb`` (its validation split, which is STS-B
dev; never downloaded: an unprepared dataset fails at once).
"""
import argparse
import sys
import time

import numpy as np

from distill_jax.data.sources import DatasetUnavailableError, tfds_builder
from distill_jax.text.sts import StsPairs, read_sts_csv, sts_score

INPUT_ERRORS = (ValueError, FileNotFoundError, ImportError, DatasetUnavailableError)


def read_tfds_stsb(name: str, data_dir: str | None = None, split: str = "validation") -> StsPairs:
  """STS pairs of a prepared TFDS GLUE/STS-B dataset, without any download."""
  try:
    import tensorflow_datasets as tfds
  except ImportError:
    raise DatasetUnavailableError("--data=tfds:... needs tensorflow-datasets "
                                  "(pip install tensorflow-datasets tensorflow-cpu)") from None
  builder = tfds_builder(name, data_dir, may_download=False,
                         how_to_point="pass --tfds_data_dir=DIR, or pass an STS-benchmark CSV "
                                      "as --data (sts_eval never downloads).")
  # Example by example: 1,500 rows, and batch_size=-1 crashed TF (vector::reserve) on strings.
  rows = list(tfds.as_numpy(builder.as_dataset(split=split)))
  text = lambda s: s.decode("utf-8") if isinstance(s, bytes) else str(s)
  return StsPairs([text(r["sentence1"]) for r in rows], [text(r["sentence2"]) for r in rows],
                  np.asarray([r["label"] for r in rows], np.float64))


def read_pairs(data: str, tfds_data_dir: str | None = None) -> StsPairs:
  if data.startswith("tfds:"):
    return read_tfds_stsb(data[len("tfds:"):], tfds_data_dir)
  return read_sts_csv(data)


def evaluate(model: str, data: str, batch_size: int = 64, max_length: int = 256,
             tfds_data_dir: str | None = None) -> tuple[float, int]:
  """(Spearman x100, number of pairs)."""
  from distill_jax.text.minilm import embed
  from distill_jax.text.student import load_text_model
  pairs = read_pairs(data, tfds_data_dir)
  config, params, tokenizer = load_text_model(model)
  score = sts_score(lambda s: embed(params, config, tokenizer, s, batch_size, max_length), pairs)
  return score, len(pairs)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default="minilm")
  parser.add_argument("--data", required=True)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--max_length", type=int, default=256)
  parser.add_argument("--tfds_data_dir", default=None)
  args = parser.parse_args(argv)
  start = time.perf_counter()
  try:
    score, n = evaluate(args.model, args.data, args.batch_size, args.max_length,
                        args.tfds_data_dir)
  except INPUT_ERRORS as e:
    print(f"FATAL: {e}", file=sys.stderr)
    return 2
  print(f"model {args.model}, data {args.data}: {n} pairs, max_length {args.max_length}, "
        f"{time.perf_counter() - start:.1f} s; Spearman x100 of cosine vs gold:")
  print(f"{score:.2f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
