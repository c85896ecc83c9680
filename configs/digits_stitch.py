r"""Model stitching on digits: the bottom of one digits teacher joined to the top of another
(e.g. seeds 0 and 1 of configs/digits_mlp10_to3.py's teacher) by a linear stitch.

  python -m distill_jax.blockwise.model_stitching --config=configs/digits_stitch.py \
      --workdir=runs/digits_stitch --config.stitch.a=RUN_SEED0/teacher/export \
      --config.stitch.b=RUN_SEED1/teacher/export

Each cut: the stitch fitted by least squares on 512 training digits, then trained alone for 500
steps on the labels (everything else frozen); the summary gives A's and B's test accuracy and
the stitched model's, and the penalty (B minus stitched).
"""
import ml_collections

from distill_jax.config import LABELS, sibling


def get_config(arg=None) -> ml_collections.ConfigDict:
  c = sibling(__file__, "digits_mlp10_to3.py", arg)
  c.stitch = ml_collections.ConfigDict(dict(a="", b="", cuts=(3, 6), steps=500,
                                            learning_rate=1e-3, terms=LABELS))
  if arg == "smoke":
    c.stitch.steps = 5
  return c
