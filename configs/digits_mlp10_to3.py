r"""Distil a 10-layer MLP into a 3-layer MLP on scikit-learn's digits (real data, no download).

  python -m distill_jax.main --config=configs/digits_mlp10_to3.py --workdir=runs/digits

Teacher: 64-256x9-10 (10 Dense layers, dropout 0.1). Student: 64-256x2-10 (3 Dense layers),
initialised from teacher layers 0, 5 and the head, then trained on soft targets (Hinton KD,
T=4, alpha=0.9) and labels of mixed-up inputs. The from-scratch baseline trains the same
student recipe (dropout, mixup, steps, learning rate) on labels only. About 35 s on 2 CPU
cores. ``:smoke`` gives a seconds-long run for tests.
"""
import ml_collections

from distill_jax.config import defaults


def get_config(arg=None) -> ml_collections.ConfigDict:
  c = defaults()
  c.task = "classification"
  c.data.source = "digits"
  c.batch_size = 64
  c.eval_every = 250
  c.baseline.enabled = True
  c.teacher.model = ml_collections.ConfigDict(dict(name="mlp", hidden=(256,) * 9, dropout=0.1))
  c.teacher.steps, c.teacher.learning_rate = 3000, 1e-3
  c.student.model = ml_collections.ConfigDict(dict(name="mlp", hidden=(256,) * 2, dropout=0.1))
  c.student.steps, c.student.learning_rate = 2000, 1e-3
  c.student.mixup = 1.0             # Beta(1, 1) mixup: KD on points between the examples
  c.student.init.strategy = "select"
  c.student.init.rules = (("depth", r"Dense_(\d+)"),)    # one group per layer
  c.student.init.select.layers = (0, 5, 9)
  c.distill.terms = (("kd", 0.9, {"temperature": 4.0}), ("ce", 0.1, {}))
  if arg == "smoke":
    c.teacher.steps, c.student.steps = 60, 40
    c.checkpoint_every = 20
  return c
