r"""all-MiniLM-L6-v2 pruned to a compact student: fewer layers, heads and MLP neurons, and a
factorised token table, chosen under a parameter budget, then distilled.

  python -m distill_jax.main --config=configs/minilm_compact.py:half --workdir=runs/compact_half \
      --config.data.path=../shared/data/stsbenchmark/sts-train.csv \
      --config.data.eval_path=../shared/data/stsbenchmark/sts-dev.csv

``:half`` allows half of the teacher's 22.7M parameters, ``:third`` a third. The teacher's
token table alone is 11.7M, so every plan factorises it (ALBERT): a (30522, rank) table and a
(rank, 384) projection, split from the teacher's table by an SVD weighted by the calibration
sentences' token counts. Each plan is a ``prune`` (Minitron): teacher layers (0, 4, 5) for 3
blocks (the best 3 of the 6 for the full-width student, docs/minilm.md) or (0, 3, 4, 5) for 4,
with the most important heads and neurons by activation on 512 training sentences (no
labels). The hidden width stays 384, so the student's sentence vectors live in the teacher's
space (an index built with the teacher's vectors can be queried with the student's). Every
plan needs at most 1/3.6 of the teacher's matmul FLOPs per token, margin for a 3x faster
encoder: the embedding lookup, norms and softmax do not shrink with the matmuls (the chosen
plans' 1/3.86 gave 3.2x-3.5x). The plans within the budget are scored by agreement with the
teacher (mean cosine of sentence vectors on 1,000 training sentences) right after pruning; the
best is distilled as configs/minilm_l6_to_l3.py distils (800 steps of 32 sentences). 15-20 min
on 2 CPU cores (results: docs/minilm.md). ``:smoke`` is a seconds-long run on the repository's
fixtures.
"""
import ml_collections

from distill_jax.config import plan, sibling

TEACHER_LAYERS = {3: (0, 4, 5), 4: (0, 3, 4, 5)}


def shape(layers: int, heads: int, neurons: int, rank: int) -> dict:
  """A plan: ``layers`` teacher blocks, ``heads`` of 12 heads, ``neurons`` of 1536, and a
  rank-``rank`` token table."""
  return plan(f"L{layers}_H{heads}_I{neurons}_R{rank}", **{
      "student.model.num_layers": layers, "student.model.num_heads": heads,
      "student.model.intermediate_size": neurons, "student.model.embedding_rank": rank,
      "student.init.prune.layers": TEACHER_LAYERS[layers]})


PLANS = (   # (layers, heads, neurons, rank); fractions of the teacher's parameters in comments
    (4, 6, 512, 256), (3, 6, 768, 256),                                          # .49 .48
    (4, 6, 512, 192), (3, 8, 768, 192), (3, 12, 512, 192), (3, 6, 768, 192),     # .40 .41 .41 .40
    (4, 6, 512, 128), (3, 8, 768, 128), (3, 6, 768, 128), (3, 8, 512, 128))      # .31 .32 .31 .30


def get_config(arg=None) -> ml_collections.ConfigDict:
  c = sibling(__file__, "minilm_l6_to_l3.py", "smoke" if arg == "smoke" else None)
  c.student.model = ml_collections.ConfigDict(dict(
      name="bert", num_layers=3, num_heads=12, head_dim=32, intermediate_size=768,
      embedding_rank=192, hidden_dropout=0.0, attention_dropout=0.0))
  c.student.init.strategy = "prune"
  c.student.init.prune.layers = TEACHER_LAYERS[3]
  c.student.init.compare = ()
  c.student.init.num_examples = 512   # calibration: activations and token counts
  # The rank-r table (the SVD's U_r S_r) stays as it starts, as the full table did in
  # minilm_l6_to_l3.py; its projection and everything else learn.
  c.student.frozen = (r"embeddings/word_embeddings/.*",)
  c.student.init.choose.by = "agreement"
  c.student.init.choose.plans = tuple(shape(*p) for p in PLANS)
  c.student.init.choose.budget = {"third": 1 / 3}.get(arg, 0.5)
  if arg == "smoke":
    c.student.init.choose.num_examples = 32
    c.student.init.choose.plans = (shape(3, 8, 768, 128), shape(4, 6, 512, 96))
  return c
