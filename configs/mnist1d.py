r"""MNIST-1D: a 1-D CNN teacher distilled into an MLP or a GRU (cross-architecture: no teacher
layer fits the student, so the student learns from outputs and features, not reused weights).

  python -m distill_jax.main --config=configs/mnist1d.py:mlp --workdir=runs/mnist1d/mlp_kd_0
  python -m distill_jax.main --config=configs/mnist1d.py:gru --workdir=runs/mnist1d/gru_kd_0

Arguments (comma separated): the student, ``mlp`` (40-100-100-10, MNIST-1D's reference MLP) or
``gru`` (bidirectional GRU of 6 units reading all 40 steps, its reference GRU); then optionally
a feature loss (``hint``, ``attention``, ``cosine``, ``rkd``, ``similarity``: feature-level KD
added to the logit KD), ``dkd`` (decoupled KD instead of Hinton KD), ``stagewise`` (features
alone first, teacher head reused, then outputs) and ``smoke`` (seconds, for tests).

Teacher: Conv(5)x3 with 32 channels and average pooling, Dense 100, head (``Conv_0..2``,
``Dense_0``, ``Dense_1``). The MLP's second hidden layer is paired with the teacher's Dense_0
(both 100 wide: no projection needed); the GRU's output sequence (40 x 12) is paired with it
through a learned projection. Every run also trains the student from scratch with the same
recipe (the baseline), so one job gives the "from scratch" and the "distilled" rows.
"""
import ml_collections

from distill_jax.config_files import sibling

# Weight of each feature loss: at initialisation each term is then of the order of the KD term
# (about 30 at T = 4 for both students; hint starts near 66, attention and cosine near 1, rkd
# near 0.05, similarity near 0.005).
FEATURE_WEIGHTS = {"hint": 1.0, "attention": 10.0, "cosine": 10.0, "rkd": 100.0,
                   "similarity": 1000.0}
FEATURE_LOSSES = tuple(FEATURE_WEIGHTS)


def get_config(arg=None) -> ml_collections.ConfigDict:
  args = [a for a in (arg or "mlp").split(",") if a]
  student = args[0]
  if student not in ("mlp", "gru"):
    raise ValueError(f"configs/mnist1d.py: first argument is the student, 'mlp' or 'gru'; got "
                     f"{student!r}")
  unknown = set(args[1:]) - set(FEATURE_LOSSES) - {"dkd", "stagewise", "smoke"}
  if unknown:
    raise ValueError(f"configs/mnist1d.py: unknown argument(s) {sorted(unknown)}; known: "
                     f"{list(FEATURE_LOSSES) + ['dkd', 'stagewise', 'smoke']}")
  c = sibling(__file__, "digits_mlp10_to3.py")   # every key and its default
  c.data.source = "mnist1d"
  c.batch_size = 100
  c.eval_every = 1000
  c.checkpoint_every = 2000
  c.teacher.model = ml_collections.ConfigDict(dict(name="cnn", channels=(32, 32, 32),
                                                   hidden=(100,), kernel_size=(5,)))
  c.teacher.steps, c.teacher.learning_rate = 6000, 3e-3
  if student == "mlp":
    c.student.model = ml_collections.ConfigDict(dict(name="mlp", hidden=(100, 100),
                                                     dropout=0.0))
    pairs, head = (("Dense_0", "Dense_1"),), (("Dense_1", "Dense_2"),)
  else:
    c.student.model = ml_collections.ConfigDict(dict(name="gru", units=6, bidirectional=True))
    pairs, head = (("Dense_0", "GRU_0"),), ()
  c.student.steps, c.student.learning_rate, c.student.mixup = 6000, 3e-3, 1.0
  c.student.init.strategy = "random"    # cross-architecture: no teacher layer fits
  c.student.init.rules = (("regex", ".*", "all"),)
  c.distill.temperature, c.distill.alpha = 4.0, 0.9
  chosen = [a for a in args[1:] if a in FEATURE_LOSSES]
  if chosen:
    c.distill.features.pairs = pairs
    c.distill.features.losses = tuple((name, FEATURE_WEIGHTS[name]) for name in chosen)
  if "dkd" in args:
    c.distill.logit_loss = "dkd"
  if "stagewise" in args:
    c.distill.features.stagewise = True
    c.distill.features.stage1_steps = 2000
    c.distill.features.head = head
  if "smoke" in args:
    c.teacher.steps, c.student.steps, c.distill.features.stage1_steps = 40, 30, 20
    c.checkpoint_every, c.eval_every = 20, 20
  return c
