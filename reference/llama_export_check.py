"""Checks that a distill_jax Llama export (Hugging Face layout: model.safetensors, config.json,
tokenizer.json) loads in PyTorch ``transformers`` and generates identically: the same greedy
tokens as distill_jax's KV-cache generation and logits within float32 noise.

  . .venv-bench/bin/activate && python reference/llama_export_check.py \
      [--export runs/shakespeare/student/export ...]

Without ``--export`` it checks two models written here: the SmolLM2-135M-Instruct teacher
(tied embeddings, grouped-query attention) exported by ``text.hf_llama.export``, and an
untied 3-block student made of teacher blocks. Each ``--export`` folder is a student
that ``distill_jax.main`` exported (``WORKDIR/student/export``). Prints one line per model and
exits 1 on a mismatch.
"""
import argparse
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PROMPTS = ("The capital of France is", "def fibonacci(n):\n", "Once upon a time, ",
           "ROMEO:\n")
NEW_TOKENS = 20


def check(folder: str, name: str) -> bool:
  import jax
  import tokenizers
  import torch
  import transformers

  from distill_jax import models
  from distill_jax.text import hf_llama
  from distill_jax.text.generate import generate

  cfg, params = hf_llama.load(folder)
  model = models.build(dict(name="llama", **cfg.to_dict()), {})
  tok = tokenizers.Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
  hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
  hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
  prompts = [tok.encode(p, add_special_tokens=False).ids for p in PROMPTS]
  prompts = [p for p in prompts if p]
  same_ids = all(hf_tok(p, add_special_tokens=False)["input_ids"]
                 == tok.encode(p, add_special_tokens=False).ids for p in PROMPTS)
  ours = generate(model, jax.device_put(params), prompts, NEW_TOKENS)
  theirs, worst = [], 0.0
  with torch.no_grad():
    for p, new in zip(prompts, ours):
      # An explicit mask: without one, transformers masks every token equal to pad_token_id
      # (a real character in a char-level vocabulary).
      out = hf.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                        do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                        pad_token_id=0)
      theirs.append(out[0, len(p):].tolist())
      seq = p + new
      ref = hf(torch.tensor([seq])).logits[0].numpy()
      got = np.asarray(model.apply(params, {"tokens": np.asarray([seq])})[0]["logits"][0])
      worst = max(worst, float(np.abs(ref - got).max()))
  ok = ours == theirs and same_ids and worst < 1e-3
  print(f"{name}: {cfg.num_layers} blocks, tied={cfg.tie_embeddings}: greedy tokens "
        f"{'identical' if ours == theirs else 'DIFFER'} ({len(prompts)} prompts x {NEW_TOKENS}), "
        f"tokenizer ids {'identical' if same_ids else 'DIFFER'}, max |logit diff| {worst:.2e}"
        f" -> {'OK' if ok else 'MISMATCH'}")
  return ok


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--export", action="append", default=[],
                      help="a student export folder (repeatable)")
  args = parser.parse_args()
  from distill_jax.text import gguf, hf_llama
  results = [check(folder, folder) for folder in args.export]
  if not args.export:
    config, params, tok = gguf.read_gguf(gguf.smollm2_path())
    eos = gguf.special_tokens(tok)["eos"]
    with tempfile.TemporaryDirectory() as tmp:
      teacher = os.path.join(tmp, "smollm2")
      hf_llama.export(params, teacher, dict(name="llama", **config), tok, eos)
      results.append(check(teacher, "SmolLM2-135M-Instruct exported"))
      # An untied student: the teacher's blocks 0, 15, 29 and an lm_head of its own (a copy of
      # the embedding, so greedy choices are not near-ties as with random weights).
      small = dict(name="llama", **dict(config, num_layers=3, tie_embeddings=False))
      student = {"embed": params["embed"], "final_norm": params["final_norm"],
                 "lm_head": {"kernel": np.ascontiguousarray(params["embed"]["embedding"].T)},
                 **{f"layer_{j}": params[f"layer_{i}"] for j, i in enumerate((0, 15, 29))}}
      folder = os.path.join(tmp, "student3")
      hf_llama.export(student, folder, small, tok, eos)
      results.append(check(folder, "untied 3-block student (teacher blocks 0, 15, 29)"))
  sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
  main()
