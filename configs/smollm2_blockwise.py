r"""SmolLM2-135M-Instruct (30 blocks) to a 15-block student, blockwise: each student block
replaces a pair of teacher blocks ([0, 1], [2, 3], ...) and learns alone, for 10 steps of 8 x 128
tokens, to map the teacher's hidden states entering the pair to those leaving it (MSE, from the
pair's second block); then the 15 are stitched under the teacher's embedding and head and
distilled end to end with forward KL for 20 steps, the budget of every trained row of
configs/smollm2_prune_distill.py (same data, held-out sets and columns).

  python -m distill_jax.main --config=configs/smollm2_blockwise.py --workdir=runs/smollm2_bw \
      --config.data.path=../shared/data/wikitext2/valid.txt \
      --config.data.other_eval='(("shakespeare", "../shared/data/tinyshakespeare/input.txt"),)'
"""
import ml_collections

from distill_jax.config import sibling


def get_config(arg=None) -> ml_collections.ConfigDict:
  c = sibling(__file__, "smollm2_prune_distill.py", arg)
  blocks = 2 if arg == "smoke" else 15
  c.student.model = ml_collections.ConfigDict(dict(name="llama_stitched",
                                                   blocks=("layers=1",) * blocks))
  c.student.init.strategy = "blockwise"
  c.student.init.choose.by = ""
  c.student.init.compare = ()
  c.sweep.variants = ()
  c.baseline.enabled = False
  b = c.student.init.blockwise
  b.steps, b.learning_rate = (2 if arg == "smoke" else 10), 1e-4
  b.plain = True     # a plain 15-block Llama: generation (sample_nll) and the HF export
  return c
