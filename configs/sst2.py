r"""SST-2 sentiment: all-MiniLM-L6-v2 fine-tuned as the teacher, distilled into a 3-layer MiniLM
or a small CNN over its frozen token embeddings.

  python -m distill_jax.main --config=configs/sst2.py --workdir=runs/sst2 \
      --config.data.path=DIR/train.tsv --config.data.eval_path=DIR/dev.tsv
  python -m distill_jax.main --config=configs/sst2.py:cnn --workdir=runs/sst2_cnn \
      --config.data.path=DIR/train.tsv --config.data.eval_path=DIR/dev.tsv \
      --config.teacher.load=runs/sst2/teacher/export

Data: GLUE-layout TSVs (``sentence<TAB>label``), or ``--config.data.source=tfds
--config.data.name=glue/sst2`` when that dataset is prepared (never downloaded unless
``data.download=True``). Teacher: the packaged all-MiniLM-L6-v2 encoder (``teacher.init``) under
a fresh head on its mean-pooled tokens, fine-tuned end to end on the labels (``teacher.load``:
a teacher fine-tuned before, e.g. the first command's export).

Arguments (comma separated):
* default: the student is 3 layers of the teacher chosen without labels (the choice of 3 of 6
  layers whose student agrees best with the teacher on 1,000 training sentences), its
  embeddings frozen, then KD at T = 2 (0.9) + labels (0.1).
* ``hint``: adds the kept layers' hidden states (masked MSE) to the KD.
* ``cnn``: the student is a CNN (widths 3, 4, 5; 100 filters each) over the teacher's token
  embeddings (copied, frozen); the baseline trains it on labels only. For runs longer than an
  epoch of the transfer set, ``--config.distill.cache=full`` computes the teacher's logits
  once for every training row (docs/text_classification.md). With few labels
  (``--config.data.labelled.fraction=0.05``), the teacher and the baseline train on the
  labelled share and KD reads the teacher on every row.
* ``augment``: one unlabelled altered copy of each training sentence (n-gram sampling and
  masking, Tang et al. 2019) in the transfer set, seen only by the KD term.
* ``smoke``: seconds, on tests/fixtures (for tests).
"""
import os

import ml_collections

from distill_jax.config import defaults, plan

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests",
                        "fixtures")


def select(layers):
  return {"student.init.strategy": "select", "student.init.select.layers": layers}


def get_config(arg=None) -> ml_collections.ConfigDict:
  args = {a for a in (arg or "").split(",") if a}
  unknown = args - {"hint", "cnn", "augment", "smoke"}
  if unknown:
    raise ValueError(f"configs/sst2.py: unknown argument(s) {sorted(unknown)}")
  c = defaults()
  c.task = "text_classification"
  c.data.source, c.data.path, c.data.eval_path = "tsv", "", ""
  c.data.max_length, c.data.eval_max_length = 64, 64
  # Batches of similar lengths: a random batch of SST-2 pads to ~50 tokens, a grouped one to
  # ~20 (its rows average 14), so a step costs 2.3x less.
  c.data.group_by_length = 50
  c.batch_size, c.eval_batch_size = 32, 128
  c.log_every, c.eval_every, c.checkpoint_every = 50, 0, 250
  c.teacher.init = "minilm"
  c.teacher.model = ml_collections.ConfigDict(dict(name="bert_classifier", with_pooler=False))
  c.teacher.steps, c.teacher.learning_rate = 600, 5e-5
  c.student.init.rules = (("regex", r"embeddings/.*", "embeddings"),
                          ("depth", r"encoder/layer_(\d+)"),
                          ("regex", r"classifier/.*", "head"))
  c.student.frozen = (r"embeddings/.*",)
  c.distill.terms = (("kd", 0.9, {"temperature": 2.0}), ("ce", 0.1, {}))
  if "cnn" in args:
    c.student.model = ml_collections.ConfigDict(dict(name="text_cnn", dropout=0.5))
    c.student.init.strategy, c.student.init.copy.groups = "copy", ("embeddings",)
    c.student.init.rules = (("regex", r"embeddings/.*", "embeddings"), ("regex", ".*", "rest"))
    c.student.steps, c.student.learning_rate = 1000, 1e-3
    c.baseline.enabled = c.baseline.from_init = True   # labels only, over the same embeddings
  else:
    c.student.model = ml_collections.ConfigDict(dict(name="bert_classifier", num_layers=3))
    c.student.steps, c.student.learning_rate = 1000, 1e-4
    c.student.init.strategy = "select"
    c.student.init.choose.by, c.student.init.choose.num_examples = "agreement", 1000
    c.student.init.compare = (plan("select_evenly", **select(())),
                              plan("select_0,1,2", **select((0, 1, 2))),
                              plan("average_of_pairs", **{"student.init.strategy": "average"}))
    if "hint" in args:
      c.distill.terms += (("hint", 1.0, {"layer_pairs": "encoder/layer_{}"}),)
  if "augment" in args:
    c.data.augment.copies = 1
  if "smoke" in args:
    c.data.path = os.path.join(FIXTURES, "sst_smoke_train.tsv")
    c.data.eval_path = os.path.join(FIXTURES, "sst_smoke_dev.tsv")
    c.data.max_length, c.data.eval_max_length = 16, 16
    c.batch_size = 8
    c.log_every, c.checkpoint_every = 5, 10
    c.teacher.steps, c.student.steps = 10, 10
    c.teacher.model.num_layers = 2          # the packaged model's first 2 layers
    if "cnn" not in args:
      c.student.model.num_layers = 1
      c.student.init.choose.num_examples = 16
      c.student.init.compare = c.student.init.compare[:1]
  return c
