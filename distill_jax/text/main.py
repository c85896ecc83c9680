r"""Distil a sentence-embedding BERT (all-MiniLM-L6-v2 by default) into a shallower one.

  python -m distill_jax.text.main --config=configs/minilm_l6_to_l3.py --workdir=runs/minilm \
      --config.data.train=sts-train.csv --config.data.eval=sts-dev.csv

Same shell as ``distill_jax.main`` (config overrides, workdir lock, resume, exit statuses);
see ``distill_jax/text/pipeline.py`` for what a run does.
"""
import os

from distill_jax import cli
from distill_jax.text.pipeline import run, validate


def main(config, workdir: str, checked=None) -> dict:
  del checked
  return run(config, workdir)


if __name__ == "__main__":
  cli.run(main, "Directory for checkpoints, metrics, the student and the summary.",
          validate=validate)
