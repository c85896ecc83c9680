r"""all-MiniLM-L6-v2 into 3 layers, blockwise: each student layer replaces a pair of teacher
layers ([0, 1], [2, 3], [4, 5]) and learns alone to map the teacher's hidden states entering the
pair to those leaving it; the three are stitched under the teacher's embeddings, then a short
end-to-end KD (the objective of configs/minilm_l6_to_l3.py).

  python -m distill_jax.main --config=configs/minilm_blockwise.py --workdir=runs/minilm_bw \
      --config.data.path=../shared/data/stsbenchmark/sts-train.csv \
      --config.data.eval_path=../shared/data/stsbenchmark/sts-dev.csv

Blocks as separate jobs (at the same time, then the assembling job reuses them):

  for j in 0 1 2; do python -m distill_jax.main --config=configs/minilm_blockwise.py \
      --workdir=runs/minilm_bw_$j --config.student.init.blockwise.only=$j \
      --config.student.init.blockwise.dir=runs/minilm_blocks ... & done; wait

Each block: 200 steps of 32 sentences (masked MSE of the hidden states, teacher activations
computed on the fly), starting from the second teacher layer of its pair; then 200 steps of KD:
800 in all, as the select + KD student of minilm_l6_to_l3.py. ``:smoke``: seconds, for tests.
"""
import ml_collections

from distill_jax.config import sibling


def get_config(arg=None) -> ml_collections.ConfigDict:
  c = sibling(__file__, "minilm_l6_to_l3.py", arg)
  # no dropout, as the select student of minilm_l6_to_l3.py (the teacher's config has 0.1)
  c.student.model = ml_collections.ConfigDict(dict(name="bert_stitched",
                                                   blocks=("layers=1",) * 3,
                                                   hidden_dropout=0.0, attention_dropout=0.0))
  c.student.init.strategy = "blockwise"
  c.student.init.choose.by = ""
  c.student.init.compare = ()
  b = c.student.init.blockwise
  b.steps, b.learning_rate = 200, 1e-4
  c.student.steps = 200
  # The assembled student is a plain 3-layer BERT (its export has the HF layout); its layer j
  # matches the teacher's layer at the end of its pair.
  b.plain = True
  c.distill.terms = (("embedding_mse", 1.0, {}), ("embedding_cosine", 10.0, {}),
                     ("hint", 1.0, {"pairs": (("encoder/layer_1", "encoder/layer_0"),
                                              ("encoder/layer_3", "encoder/layer_1"),
                                              ("encoder/layer_5", "encoder/layer_2"))}))
  if arg == "smoke":
    b.steps = 4
    c.student.steps = 4
  return c
