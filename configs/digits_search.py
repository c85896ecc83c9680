r"""Evaluate-and-adjust on digits: the smallest student plan that reaches the target.

  python -m distill_jax.search --config=configs/digits_search.py --workdir=/tmp/digits_search

The 10-layer teacher of digits_mlp10_to3.py (trained on the training data minus a 20%
validation split). Plans go from the smallest student up; each is distilled for 500 steps and
scored on the validation split; the first whose accuracy reaches 0.97 is chosen and distilled
for the full 2,000 steps, then scored once on the test split. A few minutes on 2 CPU cores.
``:smoke`` makes it a seconds-long run for the tests.
"""
import ml_collections

from distill_jax.config_files import sibling


def get_config(arg=None) -> ml_collections.ConfigDict:
  c = sibling(__file__, "digits_mlp10_to3.py", "smoke" if arg == "smoke" else None)
  c.baseline = False
  layers = dict(layers=(0, 5, 9))
  c.search = dict(
      val_fraction=0.2, steps=500, seeds=(0,), target=0.97, max_plans=10,
      plans=[  # smallest student first: the first plan reaching the target wins
          dict(name="width_2x32", strategy="width", hidden=(32, 32), options=layers),
          dict(name="width_2x64", strategy="width", hidden=(64, 64), options=layers),
          dict(name="width_2x128", strategy="width", hidden=(128, 128), options=layers),
          dict(name="select_0_5_9", strategy="select", hidden=(256, 256), options=layers),
          dict(name="similarity_merge", strategy="similarity", hidden=(256, 256),
               options=dict(mode="merge")),
      ])
  if arg == "smoke":
    c.search.steps, c.search.target = 20, 0.99
    c.search.plans = c.search.plans[:1] + c.search.plans[3:4]
  return c
