r"""MNIST-1D: a 1-D CNN teacher distilled into an MLP or a GRU (cross-architecture: no teacher
layer fits the student, so the student learns from outputs and features, not reused weights).

  python -m distill_jax.main --config=configs/mnist1d.py:mlp --workdir=runs/m1d_mlp
  python -m distill_jax.sweep --config=configs/mnist1d.py --workdir=runs/mnist1d

Arguments (comma separated): the student (first; default ``mlp``), ``mlp`` (40-100-100-10,
MNIST-1D's reference MLP) or ``gru`` (bidirectional GRU of 6 units reading all 40 steps, its
reference GRU); then optionally a feature term (``hint``, ``attention``, ``cosine``, ``rkd``,
``similarity``: feature-level KD added to the logit KD), ``dkd`` (decoupled KD instead of
Hinton KD), ``stagewise`` (features alone first, teacher head reused, then outputs) and
``smoke`` (seconds, for tests). Without an argument the config is the MLP with logit KD, and
``sweep.variants`` lists every combination the docs' table reports (the sweep runs them with
seeds 0, 1, 2: 38 min on 2 CPU cores).

Teacher: Conv(5)x3 with 32 channels and average pooling, Dense 100, head (``Conv_0..2``,
``Dense_0``, ``Dense_1``). The MLP's second hidden layer is paired with the teacher's Dense_0
(both 100 wide: no projection needed); the GRU's output sequence (40 x 12) is paired with it
through a learned projection. Every run also trains the student from scratch with the same
recipe (the baseline), so one job gives the "from scratch" and the "distilled" rows.
"""
import ml_collections

from distill_jax.config import defaults, plan

# Weight of each feature term: at initialisation each term is then of the order of the KD term
# (about 30 at T = 4 for both students; hint starts near 66, attention and cosine near 1, rkd
# near 0.05, similarity near 0.005).
FEATURE_WEIGHTS = {"hint": 1.0, "attention": 10.0, "cosine": 10.0, "rkd": 100.0,
                   "similarity": 1000.0}
VARIANTS = ("mlp", "mlp,dkd", "mlp,hint", "mlp,attention", "mlp,cosine", "mlp,rkd",
            "mlp,similarity", "mlp,stagewise,hint", "gru", "gru,dkd", "gru,hint",
            "gru,attention", "gru,cosine", "gru,rkd", "gru,similarity")


def build(arg=None) -> ml_collections.ConfigDict:
  args = [a for a in (arg or "").split(",") if a]
  if not args or args[0] not in ("mlp", "gru"):
    args.insert(0, "mlp")
  student = args[0]
  unknown = set(args[1:]) - set(FEATURE_WEIGHTS) - {"dkd", "stagewise", "smoke"}
  if unknown:
    raise ValueError(f"configs/mnist1d.py: unknown argument(s) {sorted(unknown)}; known: the "
                     f"student (mlp, gru), {list(FEATURE_WEIGHTS) + ['dkd', 'stagewise', 'smoke']}")
  c = defaults()
  c.task, c.data.source = "classification", "mnist1d"
  c.batch_size, c.eval_every, c.checkpoint_every = 100, 1000, 2000
  c.baseline.enabled = True
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
  temperature = {"temperature": 4.0}
  terms = [("kd", 0.9, temperature), ("ce", 0.1, {})]
  if "dkd" in args:                     # the paper's objective: label CE + DKD
    terms = [("ce", 1.0, {}), ("dkd", 1.0, dict(temperature, alpha=1.0, beta=8.0))]
  terms += [(name, FEATURE_WEIGHTS[name], {"pairs": pairs}) for name in args[1:]
            if name in FEATURE_WEIGHTS]
  c.distill.terms = tuple(terms)
  if "stagewise" in args:
    c.distill.stage1 = ml_collections.ConfigDict(dict(steps=2000, head=head))
  if "smoke" in args:
    c.teacher.steps, c.student.steps = 40, 30
    c.distill.stage1.steps = min(c.distill.stage1.steps, 20)
    c.checkpoint_every, c.eval_every = 20, 20
  return c


def get_config(arg=None) -> ml_collections.ConfigDict:
  c = build(arg)
  smoke = ",smoke" if arg and "smoke" in arg.split(",") else ""
  c.sweep.variants = tuple(
      plan(v, **{section: build(v + smoke)[section] for section in ("student", "distill")})
      for v in VARIANTS)
  return c
