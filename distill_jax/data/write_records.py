r"""Write a config's in-memory classification data to ArrayRecord files, to stream it back
(``data.source="array_record"``) through the same pipeline as data that does not fit in memory.

  python -m distill_jax.data.write_records --config=configs/digits_mlp10_to3.py --out=DIR \
      [--shards=4]

Writes ``DIR/train-*.array_record`` and ``DIR/test-*.array_record`` (the config's training and
held-out split, in order) and prints the overrides that read them back.
"""
import os
import sys

from distill_jax.errors import InputError


def write(config, out: str, shards: int = 4) -> dict:
  """The config's data source's splits as ArrayRecord shards under ``out``; returns the
  config overrides that stream them back."""
  from distill_jax import data as data_lib
  from distill_jax.data.streaming import write_array_record
  ds = data_lib.load(config.data)
  if not isinstance(ds, data_lib.Dataset):
    raise InputError(f"data.source={config.data.source!r} does not give labelled arrays")
  write_array_record(os.path.join(out, "train"), {"x": ds.x_train, "y": ds.y_train}, shards)
  write_array_record(os.path.join(out, "test"), {"x": ds.x_test, "y": ds.y_test}, 1)
  return {"data.source": "array_record", "data.num_classes": ds.num_classes,
          "data.path": os.path.join(out, "train-*"), "data.eval_path": os.path.join(out, "test-*")}


def main(argv=None) -> None:
  import argparse
  from distill_jax.config import load
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", required=True, help="a config file, optionally :arg")
  parser.add_argument("--out", required=True, help="folder for the record files")
  parser.add_argument("--shards", type=int, default=4, help="training files")
  args = parser.parse_args(argv)
  path, _, arg = args.config.partition(":")
  overrides = write(load(path, arg or None), args.out, args.shards)
  print(" ".join(f"--config.{k}={v}" for k, v in overrides.items()))


if __name__ == "__main__":
  sys.exit(main())
