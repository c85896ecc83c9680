r"""CIFAR-100 KD benchmarks of CRD (Tian et al. 2019) and DKD (Zhao et al. 2022): a ResNet or
wide-ResNet teacher trained on CIFAR-100, then a smaller student distilled from it with KD.

  python -m distill_jax.main --config=configs/cifar100.py:resnet56_resnet20 \
      --workdir=runs/c100_r56_r20 --config.data.data_dir=DIR

Data: TFDS ``cifar100`` prepared as ArrayRecord in DIR (``tfds build cifar100
--file_format=array_record --data_dir=DIR`` where there is network; nothing is downloaded here),
streamed through grain (``data.stream``), each host reading its own shard; random crop (4-pixel
padding) and horizontal flip on the host, so teacher and student see the same images. Accuracy
on the 10,000 test images.

Recipe (CRD / DKD, for teacher and student alike): 240 epochs, batch 64, SGD with momentum 0.9
at 0.05 (x 0.1 at epochs 150, 180, 210), weight decay 5e-4; KD at T = 4: 0.9 KL T^2 + 0.1 CE.
The student starts from scratch (``student.init.strategy="random"``), as in the papers; the
baseline row trains it on labels alone.

Arguments (one pair, optionally ``,smoke``):

| argument | teacher -> student | published top-1 %: teacher / student alone / KD / DKD |
|---|---|---|
| ``resnet56_resnet20`` | resnet56 (0.86M) -> resnet20 (0.28M) | 72.34 / 69.06 / 70.66 / 71.97 |
| ``resnet32x4_resnet8x4`` | resnet32x4 (7.4M) -> resnet8x4 (1.2M) | 79.42 / 72.50 / 73.33 / 76.32 |
| ``wrn_40_2_wrn_16_2`` | wrn_40_2 (2.3M) -> wrn_16_2 (0.70M) | 75.61 / 73.26 / 74.92 / 76.23 |

Not run here (no accelerator in this project's environment): these are the numbers a run should
reproduce, never results of this code. Expected wall time on one current GPU, an estimate and
not a measurement: each phase (teacher, baseline, student) is 187,440 steps of 64 images; small
ResNets at batch 64 are bound by per-step latency, roughly 5-15 ms a step, so 15-50 minutes a
phase and 1-2.5 hours for the three. ``smoke``: the pair's model families
at toy depth, a few steps on whatever ``cifar100`` TFDS gives (tests use
``tfds.testing.mock_data``).
"""
import ml_collections

from distill_jax.config import defaults
from distill_jax.models.resnet import PARTITION_RULES, preset_fields

PAIRS = {"resnet56_resnet20": ("resnet56", "resnet20"),
         "resnet32x4_resnet8x4": ("resnet32x4", "resnet8x4"),
         "wrn_40_2_wrn_16_2": ("wrn_40_2", "wrn_16_2")}
EPOCHS, BATCH, TRAIN_IMAGES = 240, 64, 50_000
MILESTONES = (150, 180, 210)


def recipe(c: ml_collections.ConfigDict, steps: int) -> None:
  """SGD 0.05, momentum 0.9, x0.1 at the milestones, weight decay 5e-4, ``steps`` steps."""
  c.steps, c.learning_rate, c.weight_decay = steps, 0.05, 5e-4
  c.optimizer, c.momentum = "sgd", 0.9
  c.schedule, c.boundaries, c.decay = "steps", tuple(m / EPOCHS for m in MILESTONES), 0.1


def get_config(arg=None) -> ml_collections.ConfigDict:
  args = [a for a in (arg or "").split(",") if a]
  pairs = [a for a in args if a in PAIRS]
  unknown = sorted(set(args) - set(PAIRS) - {"smoke"})
  if unknown or len(pairs) != 1:
    raise ValueError(f"configs/cifar100.py: give one of {sorted(PAIRS)} (and optionally "
                     f"smoke); got {arg!r}")
  teacher, student = PAIRS[pairs[0]]
  c = defaults()
  c.task = "classification"
  c.data.source, c.data.name, c.data.stream, c.data.eval_split = "tfds", "cifar100", True, "test"
  c.data.batch_augment = ("crop:4", "flip")
  c.batch_size, c.eval_batch_size = BATCH, 500
  c.log_every, c.checkpoint_every, c.eval_every = 100, 5000, 0
  steps = EPOCHS * (TRAIN_IMAGES // BATCH)
  c.teacher.model = ml_collections.ConfigDict(dict(name="resnet", preset=teacher,
                                                       **preset_fields(teacher)))
  c.student.model = ml_collections.ConfigDict(dict(name="resnet", preset=student,
                                                       **preset_fields(student)))
  recipe(c.teacher, steps)
  recipe(c.student, steps)
  c.student.init.strategy, c.student.init.rules = "random", PARTITION_RULES
  c.distill.terms = (("kd", 0.9, {"temperature": 4.0}), ("ce", 0.1, {}))
  c.baseline.enabled = True
  if "smoke" in args:
    c.batch_size, c.eval_batch_size = 8, 16
    c.log_every, c.checkpoint_every = 2, 2
    c.teacher.steps = c.student.steps = 4
    c.baseline.enabled = False
    # The same families at toy depth: one block per stage, the teacher's first stage two; the
    # x4 pair at a quarter of its width (its 64-256 channels made the smoke run compute-bound).
    c.teacher.model.stage_sizes, c.student.model.stage_sizes = (2, 1, 1), (1, 1, 1)
    if pairs[0] == "resnet32x4_resnet8x4":
      for m in (c.teacher.model, c.student.model):
        m.widths, m.stem_width = tuple(w // 4 for w in m.widths), m.stem_width // 4
  return c
