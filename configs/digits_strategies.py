r"""Every recombination strategy against random init, same student, same KD steps, 3 seeds.

  python -m distill_jax.search --config=configs/digits_strategies.py:500 --workdir=/tmp/strat500
  python -m distill_jax.search --config=configs/digits_strategies.py:2000 --workdir=/tmp/strat2000

The argument is the distillation budget in steps. No target: every plan is run with seeds 0,
1, 2 and the leaderboard reports validation accuracy mean and spread (the README's strategy
table). The teacher is the 10-layer MLP of digits_mlp10_to3.py, trained once (seed 0).
"""
import ml_collections

from distill_jax.config_files import sibling


def get_config(arg=None) -> ml_collections.ConfigDict:
  c = sibling(__file__, "digits_mlp10_to3.py")
  c.baseline = False
  wide = (256, 256)
  c.search = dict(
      val_fraction=0.2, steps=int(arg or 500), seeds=(0, 1, 2), target=0.0, max_plans=10,
      plans=[
          dict(name="random", strategy="random", hidden=wide),
          dict(name="select_evenly", strategy="select", hidden=wide, options=dict(layers=())),
          dict(name="select_0_1_9", strategy="select", hidden=wide, options=dict(layers=(0, 1, 9))),
          dict(name="average", strategy="average", hidden=wide),
          dict(name="similarity_merge", strategy="similarity", hidden=wide,
               options=dict(mode="merge")),
          dict(name="similarity_drop", strategy="similarity", hidden=wide,
               options=dict(mode="drop")),
          dict(name="width_2x128", strategy="width", hidden=(128, 128),
               options=dict(layers=())),
      ])
  return c
