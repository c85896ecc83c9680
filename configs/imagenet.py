r"""ImageNet (ILSVRC 2012) KD: ResNet-34 -> ResNet-18 with torchdistill's recipe.

  python -m distill_jax.main --config=configs/imagenet.py --workdir=runs/in1k_r34_r18 \
      --config.data.data_dir=DIR --config.teacher.load=TEACHER_EXPORT

Data: TFDS ``imagenet2012`` prepared as ArrayRecord in DIR (its images need a manual download;
``tfds build imagenet2012 --file_format=array_record --manual_dir=... --data_dir=DIR``),
streamed through grain with worker processes (``data.num_workers``), each host reading its own
shard. Training images: a random-resized (inception) crop to 224 and a horizontal flip, per
example on the host, so teacher and student see the same crop; held out: the 50,000 validation
images resized to 256 and centre-cropped to 224 (torchvision's evaluation).

Teacher: torchdistill starts from torchvision's pretrained ResNet-34 (73.31% top-1); bring it
(or any ResNet-34 export) with ``teacher.load``, or train one here (``teacher.steps``, the same
recipe; the published number assumes the pretrained one). Student: ResNet-18 from scratch.
Recipe (torchdistill's ``kd-resnet18_from_resnet34.yaml``): 100 epochs, batch 256, SGD momentum
0.9 at 0.1 (x 0.1 at epochs 30, 60, 90), weight decay 1e-4; loss 0.5 KD (T = 1) + 0.5 CE.
Published: ResNet-18 trained alone 69.76 (torchvision), with this KD 71.37 (torchdistill).
torchvision normalises images by the ImageNet channel means and deviations; this pipeline feeds
[0, 1] pixels, so a converted torchvision teacher needs that normalisation folded into its stem.

Not run here (no accelerator in this project's environment): the numbers above are what a run
should reproduce, never results of this code. Expected wall time, an estimate and not a
measurement: 500,400 steps of 256 images (128M images); about 18 GFLOP an image (the student's
forward and backward, 3 x 3.6, and the teacher's forward, 7.3), 2.3e18 FLOP in all. At 40% of
one H100's dense bfloat16 peak that is 1.6 hours, but only if the host decodes and crops about
22,000 images/s; at the ~4,000 images/s a single GPU host more typically sustains, about 9
hours (docs/vision.md: what this machine's pipeline delivers). ``smoke``: toy ResNets of the same family and a few steps on small images
(tests use ``tfds.testing.mock_data``).
"""
import ml_collections

from distill_jax.config import defaults
from distill_jax.models.resnet import PARTITION_RULES, preset_fields

EPOCHS, BATCH, TRAIN_IMAGES = 100, 256, 1_281_167
MILESTONES = (30, 60, 90)


def get_config(arg=None) -> ml_collections.ConfigDict:
  args = {a for a in (arg or "").split(",") if a}
  if args - {"smoke"}:
    raise ValueError(f"configs/imagenet.py: unknown argument(s) {sorted(args - {'smoke'})}")
  c = defaults()
  c.task = "classification"
  c.data.source, c.data.name, c.data.stream = "tfds", "imagenet2012", True
  c.data.eval_split, c.data.num_workers = "validation", 8
  c.data.example_augment = ("inception_crop:224", "flip")
  c.data.eval_example = ("center_crop:224",)
  c.batch_size, c.eval_batch_size = BATCH, 500
  c.log_every, c.checkpoint_every, c.eval_every = 100, 5000, 0
  steps = EPOCHS * (TRAIN_IMAGES // BATCH)
  c.teacher.model = ml_collections.ConfigDict(dict(name="resnet", preset="resnet34",
                                                       **preset_fields("resnet34")))
  c.student.model = ml_collections.ConfigDict(dict(name="resnet", preset="resnet18",
                                                       **preset_fields("resnet18")))
  for r in (c.teacher, c.student):
    r.steps, r.learning_rate, r.weight_decay = steps, 0.1, 1e-4
    r.optimizer, r.momentum, r.schedule, r.decay = "sgd", 0.9, "steps", 0.1
    r.boundaries = tuple(m / EPOCHS for m in MILESTONES)
  c.student.init.strategy, c.student.init.rules = "random", PARTITION_RULES
  c.distill.terms = (("kd", 0.5, {"temperature": 1.0}), ("ce", 0.5, {}))
  if "smoke" in args:
    c.data.num_workers = 0
    c.data.example_augment = ("inception_crop:32", "flip")
    c.data.eval_example = ("center_crop:32",)
    c.batch_size, c.eval_batch_size = 8, 16
    c.log_every, c.checkpoint_every = 2, 2
    c.teacher.steps = c.student.steps = 4
    c.teacher.model.stage_sizes, c.student.model.stage_sizes = (2, 1, 1, 1), (1, 1, 1, 1)
    for m in (c.teacher.model, c.student.model):
      m.widths, m.stem_width = (8, 16, 32, 64), 8
  return c
