r"""SmolLM2-135M-Instruct (30 blocks) pruned to half depth (15 blocks) and distilled: every
pruning method scored right after pruning, then one objective per variant from the start the
teacher agrees with most (label-free), all at one token budget; and a randomly initialised
15-block student with the same budget.

  python -m distill_jax.sweep --config=configs/smollm2_prune_distill.py --workdir=runs/prune \
      --config.data.path=../shared/data/wikitext2/valid.txt \
      --config.data.other_eval='(("shakespeare", "../shared/data/tinyshakespeare/input.txt"),)'

Held out: the last 2% of the WikiText-2 file (in-domain), the last 4,096 tokens of the other
domain's file (never trained on). Training: the first 160 packed 128-token sequences of the
rest (20,480 tokens; 20 steps of 8 sequences), Adam 1e-4 cosine. Columns: perplexity in and
out of domain, ``kl_teacher`` (mean KL(teacher || student) per held-out token: fidelity),
``sample_nll`` (the teacher's NLL per token of 8 sampled 32-token continuations of held-out
prompts: generation quality), training tokens/s and seconds. ``:smoke`` is a tiny setting for
tests (pass a small text file).
"""
import ml_collections

from distill_jax.config import defaults, plan
from distill_jax.models.llama import FSDP_RULES, PARTITION_RULES

EVERY_OTHER = tuple(range(0, 30, 2))          # blocks 0, 2, ..., 28


def get_config(arg=None) -> ml_collections.ConfigDict:
  c = defaults()
  c.task = "causal_lm"
  c.data.source, c.data.tokenizer, c.data.documents = "text", "smollm2", "raw"
  c.data.test_fraction, c.data.other_eval_tokens = 0.02, 4096
  c.data.max_length, c.data.eval_max_length, c.data.eval_stride = 128, 256, 128
  c.data.train_sequences = 160
  c.batch_size, c.eval_batch_size = 8, 8
  c.log_every, c.eval_every, c.checkpoint_every = 1, 0, 100
  c.eval_cache = True        # the teacher and the shared pruned start are evaluated once
  c.teacher.load = "smollm2"
  c.teacher.model = ml_collections.ConfigDict(dict(name="llama"))
  c.student.model = ml_collections.ConfigDict(dict(name="llama", num_layers=15))
  c.student.steps, c.student.learning_rate = 20, 1e-4
  c.student.init.rules = PARTITION_RULES
  c.student.init.num_examples = 8           # calibration: 8 x 128 tokens
  candidates = (
      plan("every_other", **{"student.init.strategy": "select",
                             "student.init.select.layers": EVERY_OTHER}),
      plan("evenly", **{"student.init.strategy": "select"}),     # first and last kept
      plan("influence_cosine", **{"student.init.strategy": "influence",
                                  "student.init.influence.measure": "cosine"}),
      plan("influence_cka", **{"student.init.strategy": "influence",
                               "student.init.influence.measure": "cka"}))
  # The start: the candidate whose greedy next tokens agree most with the teacher's on 16
  # training sequences (no labels).
  c.student.init.choose = ml_collections.ConfigDict(dict(by="agreement", num_examples=16,
                                                         plans=candidates))
  c.distill.terms = (("kd", 1.0, {"temperature": 1.0}),)
  c.distill.cache_topk = 32
  c.distill.on_policy.prompt_length = 16
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  c.sharding = ml_collections.ConfigDict(dict(student=FSDP_RULES, teacher=FSDP_RULES))
  c.generate.steps, c.generate.prompts = 24, ("The capital of France is",)
  c.generate.quality = ml_collections.ConfigDict(dict(prompts=8, steps=32, temperature=1.0))
  # The randomly initialised student: forward KL with the same budget (the sweep's baseline).
  c.baseline.terms = (("kd", 1.0, {"temperature": 1.0}),)
  c.sweep.seeds = (0,)
  c.sweep.columns = ("perplexity", "perplexity_shakespeare", "kl_teacher", "sample_nll",
                     "train_tokens_per_s", "train_seconds")
  kd = lambda name, weight=1.0, **o: (name, weight, o)
  c.sweep.variants = (
      # the pruned students at init (student.init.compare) and forward KL from the chosen one
      plan("forward_kl", **{"student.init.compare": candidates}),
      plan("cross_entropy", **{"distill.terms": (kd("ce"),)}),
      plan("reverse_kl", **{"distill.terms": (kd("reverse_kl"),)}),
      plan("jsd", **{"distill.terms": (kd("jsd", beta=0.5),)}),
      plan("kd_ce_mix", **{"distill.terms": (kd("kd", 0.5), kd("ce", 0.5))}),
      plan("forward_kl_topk_cache", **{"distill.cache": "topk"}),
      # half the steps on the student's own continuations of 16-token prompts
      plan("on_policy", **{"distill.on_policy.fraction": 0.5}))
  if arg == "smoke":
    c.teacher.load = ""
    c.teacher.model = ml_collections.ConfigDict(dict(
        name="llama", num_layers=4, hidden_size=32, num_heads=4, num_kv_heads=2,
        intermediate_size=64, max_position=64))
    c.teacher.steps, c.teacher.terms = 4, (("ce", 1.0, {}),)
    c.student.model = ml_collections.ConfigDict(dict(name="llama", num_layers=2))
    c.data.tokenizer = "char"
    c.data.max_length = c.data.eval_max_length = c.data.eval_stride = 16
    c.data.test_fraction, c.data.train_sequences, c.data.other_eval_tokens = 0.1, 16, 64
    c.student.steps, c.student.init.num_examples, c.batch_size = 2, 4, 4
    c.student.init.choose.num_examples = 4
    c.student.init.choose.plans = c.student.init.choose.plans[1:]
    c.generate.steps, c.generate.prompts = 4, ()
    c.generate.quality = ml_collections.ConfigDict(dict(prompts=2, steps=4, temperature=1.0))
    c.distill.on_policy.prompt_length = 4
    c.sweep.variants = tuple(v for v in c.sweep.variants if v["name"] != "forward_kl") + (
        plan("forward_kl", **{"student.init.compare": c.student.init.choose.plans}),)
  return c
