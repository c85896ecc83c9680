r"""How much of an SST-2 held-out file the training file already contains, and the held-out
rows it does not (for scoring models on text they never saw).

  python benchmarks/sst2_overlap.py --train=DIR/train.tsv --dev=DIR/dev.tsv --out=unseen.tsv
  python benchmarks/classify_speed.py --data=unseen.tsv --models=A,B,C --rounds=1

GLUE's SST-2 train holds every phrase of the treebank's parse trees, so a dev file carved from
it (as ``../shared/data/sst2/dev.tsv`` is) mostly holds phrases of sentences whose other
phrases, and often the sentence itself, are training rows. A model that fits the training rows
closely is rewarded on such rows for remembering them. ``--out`` gets the held-out rows that
are not a word-aligned part of any training row (GLUE layout, the same header).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from distill_jax.tasks.text_classification import read_tsv  # noqa: E402


def words(row: str) -> str:
  """The row's words, one space apart (rows are space-tokenised)."""
  return " ".join(row.split())


def contained(rows: list[str], corpus: list[str]) -> list[bool]:
  """For each row: is it, word-aligned, part of some corpus row?"""
  text = " " + " \n ".join(map(words, corpus)) + " "
  return [f" {words(r)} " in text for r in rows]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--train", required=True)
  parser.add_argument("--dev", required=True)
  parser.add_argument("--out", default="", help="write the held-out rows not in training here")
  args = parser.parse_args()
  train, _ = read_tsv(args.train)
  dev, labels = read_tsv(args.dev)
  inside = contained(dev, train)
  exact = set(map(words, train))
  n_exact = sum(words(s) in exact for s in dev)
  n_in = sum(inside)
  print(f"{args.dev}: {len(dev)} rows; {n_exact} ({n_exact / len(dev):.1%}) are training rows; "
        f"{n_in} ({n_in / len(dev):.1%}) are part of a training row; "
        f"{len(dev) - n_in} are in no training row")
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      f.write("sentence\tlabel\n")
      for s, y, seen in zip(dev, labels, inside):
        if not seen:
          f.write(f"{s}\t{int(y)}\n")
    print(f"wrote {len(dev) - n_in} rows to {args.out}")


if __name__ == "__main__":
  main()
