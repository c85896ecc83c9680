r"""Blockwise (heterogeneous) training on scikit-learn's digits: the 10-layer teacher of
configs/digits_mlp10_to3.py, its 9 hidden layers split into blocks that students learn one at a
time from the teacher's activations, then stitched under the teacher's head.

  python -m distill_jax.main --config=configs/digits_blockwise.py --workdir=runs/digits_bw
  python -m distill_jax.sweep --config=configs/digits_blockwise.py:sweep --workdir=runs/bw_sweep

Default: 10 -> 3 layers. Blocks [0-4] and [5-8], each one 256-wide layer trained alone for 500
steps (MSE to the teacher's hidden state at the block's end, teacher activations cached), then
1,000 steps of end-to-end KD (T=4, alpha=0.9, mixup, as the select student of
digits_mlp10_to3.py, which trains 2,000 steps: the same total). ``:sweep``: 3 seeds of that,
the select + KD student, and Puzzle-style assembly of three blocks ([0-2], [3-5], [6-8]; each
kept, one layer, two layers through a 64-wide middle, or dropped) under two parameter budgets,
each against the uniform student of that size. ``:search``: the evaluate-and-adjust driver
(``python -m distill_jax.search``) over a budgeted assembly, a uniform blockwise student and
select + KD, on a validation split. ``:smoke``: seconds, for tests.
"""
import ml_collections

from distill_jax.config import plan, sibling

VARIANTS = ("keep", "layers=1", "layers=2,width=64", "drop")
THREE = ((0, 1, 2), (3, 4, 5), (6, 7, 8))


def blockwise(blocks, **more):
  return {"student.init.strategy": "blockwise",
          "student.model": {"name": "mlp_stitched", "blocks": tuple(blocks)}, **more}


def get_config(arg=None) -> ml_collections.ConfigDict:
  c = sibling(__file__, "digits_mlp10_to3.py", "smoke" if arg == "smoke" else None)
  c.student.model = ml_collections.ConfigDict(dict(name="mlp_stitched",
                                                   blocks=("layers=1", "layers=1")))
  c.student.init.strategy = "blockwise"
  b = c.student.init.blockwise
  b.blocks = ((0, 1, 2, 3, 4), (5, 6, 7, 8))
  b.steps, b.learning_rate, b.cache = 500, 1e-3, True
  if arg != "smoke":
    c.student.steps = 1000
  three = {"student.init.blockwise.blocks": THREE}
  budget = lambda n: blockwise(("keep",) * 3, **three, **{
      "student.init.blockwise.variants": VARIANTS, "student.init.blockwise.budget": n})
  if arg == "search":   # the evaluate-and-adjust driver: a budgeted assembly among the plans
    c.search.plans = (plan("budget_90k", **budget(90_000)),
                      plan("uniform_150.8k", **blockwise(("layers=1",) * 3, **three)),
                      plan("select", **{"student.init.strategy": "select", "student.model": {
                          "name": "mlp", "hidden": (256, 256), "dropout": 0.1}}))
    c.search.steps, c.search.target = 1000, 0.0
  if arg == "sweep":
    c.sweep.variants = (
        plan("select_kd", **{"student.init.strategy": "select", "student.steps": 2000,
                             "student.model": {"name": "mlp", "hidden": (256, 256),
                                               "dropout": 0.1}}),
        plan("blockwise_kd", **blockwise(("layers=1",) * 2)),
        plan("blockwise_stitch_kd", **blockwise(("layers=1",) * 2,
                                                **{"student.init.blockwise.stitch": True})),
        plan("budget_90k", **budget(90_000)),
        plan("uniform_89.5k", **blockwise(("layers=2,width=64",) * 3, **three)),
        plan("budget_151k", **budget(151_000)),
        plan("uniform_150.8k", **blockwise(("layers=1",) * 3, **three)))
    c.sweep.columns = ("agreement",)
  if arg == "smoke":
    b.steps = 20
  return c
