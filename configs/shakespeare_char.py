r"""A character-level Llama trained from scratch on Tiny Shakespeare (nanoGPT's CPU setting:
4 blocks of width 128, 4 heads, context 64, batch 12, 2,000 steps at 1e-3; nanoGPT reports a
validation loss of 1.88 there), then distilled into a 2-block student that starts from every
other teacher block (logit KD at T = 2 plus the next-token labels).

  python -m distill_jax.main --config=configs/shakespeare_char.py --workdir=runs/shakespeare \
      --config.data.path=../shared/data/tinyshakespeare/input.txt

Seeds x objectives (``distill_jax.sweep``; the teacher of the run above reused): the 2-block
student from the same start trained on labels only, on KD + labels, on KD alone, and on KD
alone with half its steps on its own samples (on-policy, 16-character prompts):

  python -m distill_jax.sweep --config=configs/shakespeare_char.py --workdir=runs/shk_sweep \
      --config.data.path=../shared/data/tinyshakespeare/input.txt \
      --config.teacher.load=runs/shakespeare/teacher/export --config.student.steps=1000

The last 10% of the text is held out (as nanoGPT). Held-out loss is per character, over
non-overlapping 64-character windows (each target sees 0..63 characters of context, as in
nanoGPT's estimate). ``:smoke`` is a seconds-long setting for tests and notebooks (give it a
text file with ``--config.data.path``).
"""
import ml_collections

from distill_jax.config import defaults
from distill_jax.models.llama import FSDP_RULES, PARTITION_RULES


def lm(num_layers: int, width: int = 128, heads: int = 4) -> ml_collections.ConfigDict:
  # SwiGLU has 3 matrices: 352 ~ 2/3 x 4 x 128 gives about GPT's 4x MLP's parameter count.
  return ml_collections.ConfigDict(dict(
      name="llama", num_layers=num_layers, hidden_size=width, num_heads=heads,
      num_kv_heads=heads, intermediate_size=352 * width // 128, rope_theta=10000.0,
      tie_embeddings=False, max_position=256))


def get_config(arg=None) -> ml_collections.ConfigDict:
  c = defaults()
  c.task = "causal_lm"
  c.data.source, c.data.tokenizer, c.data.documents = "text", "char", "raw"
  c.data.test_fraction = 0.1
  c.data.max_length = c.data.eval_max_length = c.data.eval_stride = 64
  c.batch_size, c.eval_batch_size = 12, 64
  c.log_every, c.eval_every, c.checkpoint_every = 50, 1000, 1000
  c.teacher.model = lm(4)
  c.teacher.steps, c.teacher.learning_rate = 2000, 1e-3
  c.student.model = lm(2)
  c.student.steps, c.student.learning_rate = 2000, 1e-3
  c.student.init.strategy = "select"
  c.student.init.rules = PARTITION_RULES
  c.distill.terms = (("kd", 0.5, {"temperature": 2.0}), ("ce", 0.5, {}))
  # FSDP over the mesh's "fsdp" axis (size 1 here; e.g. --config.mesh.fsdp=4 on 4+ devices)
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  c.sharding = ml_collections.ConfigDict(dict(student=FSDP_RULES, teacher=FSDP_RULES))
  c.baseline.enabled = True
  c.generate.steps = 64
  c.generate.prompts = ("ROMEO:", "First Citizen:\n")
  c.generate.quality = ml_collections.ConfigDict(dict(prompts=16, steps=48, temperature=1.0))
  c.distill.on_policy.prompt_length = 16
  kd = (("kd", 1.0, {"temperature": 2.0}),)
  c.sweep.seeds = (0, 1, 2)
  c.sweep.columns = ("log_likelihood", "kl_teacher", "sample_nll")
  c.sweep.variants = (
      dict(name="labels_only", **{"distill.terms": (("ce", 1.0, {}),)}),
      dict(name="kd_and_labels"),
      dict(name="kd", **{"distill.terms": kd}),
      dict(name="kd_on_policy", **{"distill.terms": kd, "distill.on_policy.fraction": 0.5}))
  if arg == "smoke":
    c.data.max_length = c.data.eval_max_length = c.data.eval_stride = 16
    c.batch_size, c.eval_batch_size = 4, 8
    c.teacher.model, c.student.model = lm(2, 32, 2), lm(1, 32, 2)
    c.teacher.steps = c.student.steps = 6
    c.log_every, c.eval_every, c.checkpoint_every = 2, 0, 3
    c.generate.steps, c.generate.prompts = 4, ()
    c.generate.quality = ml_collections.ConfigDict(dict(prompts=2, steps=4, temperature=1.0))
    c.distill.on_policy.prompt_length = 4
  return c
