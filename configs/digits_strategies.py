r"""Every recombination strategy against random init, same student, same KD steps, 3 seeds.

  python -m distill_jax.search --config=configs/digits_strategies.py:500 --workdir=runs/strat500
  python -m distill_jax.search --config=configs/digits_strategies.py:2000 --workdir=runs/strat2000

The argument is the distillation budget in steps. No target: every plan is run with seeds 0,
1, 2 and the leaderboard reports validation accuracy mean and spread (docs/partition.md's
strategy table). The teacher is the 10-layer MLP of digits_mlp10_to3.py, trained once (seed 0).
"""
import ml_collections

from distill_jax.config import plan
from distill_jax.config import sibling


def strategy(name, **options):
  return {"student.init.strategy": name,
          **{f"student.init.{name}.{k}": v for k, v in options.items()}}


def get_config(arg=None) -> ml_collections.ConfigDict:
  c = sibling(__file__, "digits_mlp10_to3.py")
  c.baseline.enabled = False
  c.search.steps, c.search.seeds, c.search.target = int(arg or 500), (0, 1, 2), 0.0
  c.search.plans = (
      plan("random", **strategy("random")),
      plan("select_evenly", **strategy("select", layers=())),
      plan("select_0_1_9", **strategy("select", layers=(0, 1, 9))),
      plan("average", **strategy("average")),
      plan("similarity_merge", **strategy("similarity", mode="merge")),
      plan("similarity_drop", **strategy("similarity", mode="drop")),
      plan("width_2x128", **strategy("width", layers=()), **{"student.model.hidden": (128, 128)}))
  return c
