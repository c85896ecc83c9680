r"""Evaluate-and-adjust on digits: the smallest student plan that reaches the target.

  python -m distill_jax.search --config=configs/digits_search.py --workdir=runs/digits_search

The 10-layer teacher of digits_mlp10_to3.py (trained on the training data minus a 20%
validation split). Plans go from the smallest student up; each is distilled for 500 steps and
scored on the validation split; the first whose accuracy reaches 0.97 is chosen and distilled
for the full 2,000 steps, then scored once on the test split. A few minutes on 2 CPU cores.
``:smoke`` makes it a seconds-long run for the tests.
"""
import ml_collections

from distill_jax.config import plan
from distill_jax.config import sibling


def width(hidden):
  return {"student.model.hidden": hidden, "student.init.strategy": "width",
          "student.init.width.layers": (0, 5, 9)}


def get_config(arg=None) -> ml_collections.ConfigDict:
  c = sibling(__file__, "digits_mlp10_to3.py", "smoke" if arg == "smoke" else None)
  c.baseline.enabled = False
  c.search.steps, c.search.seeds, c.search.target = 500, (0,), 0.97
  c.search.plans = (  # smallest student first: the first plan reaching the target wins
      plan("width_2x32", **width((32, 32))),
      plan("width_2x64", **width((64, 64))),
      plan("width_2x128", **width((128, 128))),
      plan("select_0_5_9", **{"student.init.strategy": "select"}),
      plan("similarity_merge", **{"student.init.strategy": "similarity",
                                  "student.init.similarity.mode": "merge"}))
  if arg == "smoke":
    c.search.steps, c.search.target = 20, 0.99
    c.search.plans = c.search.plans[:1] + c.search.plans[3:4]
  return c
