r"""Where the MiniLM distillation step loses to PyTorch: a 3-block BERT student's forward pass
alone and its forward + backward (no teacher, no optimizer), distill_jax vs transformers.

  . .venv-bench/bin/activate && python benchmarks/bert_backward.py [--batch=32] [--length=48]

Both sides: all-MiniLM-L6-v2's blocks 0, 4, 5 and embeddings (frozen: under stop_gradient /
requires_grad False), dropout off, float32, a random token batch without padding, loss
sum(mean-pooled hidden states ^ 2). distill_jax: ``BertEncoder`` under ``jax.jit``; PyTorch:
``transformers.BertModel`` (its default attention), eager, on the same CPU threads. Each figure
is seconds per call, the median of 10 after a warm-up call; three rounds. benchmarks/minilm_step.py
times the whole step.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.lm_kd_torch import seconds_of  # noqa: E402
from distill_jax.models.bert import (BertConfig, BertEncoder, bert_config_to_hf,  # noqa: E402
                                     mean_pool)
from distill_jax.text import minilm  # noqa: E402
from distill_jax.text.weights import params_to_hf_tensors  # noqa: E402

LAYERS = (0, 4, 5)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--length", type=int, default=48)
  args = parser.parse_args()
  import torch
  import transformers
  threads = os.cpu_count()
  torch.set_num_threads(threads)
  config, params, _ = minilm.load_minilm()
  fields = {k: v for k, v in config.items() if k != "name"}
  cfg = BertConfig(**fields).replace(num_layers=len(LAYERS), hidden_dropout=0.0,
                                     attention_dropout=0.0)
  student = {**params, "encoder": {f"layer_{j}": params["encoder"][f"layer_{i}"]
                                   for j, i in enumerate(LAYERS)}}
  ids = np.random.default_rng(0).integers(1000, 20000, (args.batch, args.length))
  mask = np.ones_like(ids)
  module = BertEncoder(cfg)

  def loss(p):
    p = {**p, "embeddings": jax.lax.stop_gradient(p["embeddings"])}
    out = module.apply({"params": p}, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32))
    return jnp.sum(mean_pool(out.last_hidden_state, jnp.asarray(mask)) ** 2)

  forward, backward = jax.jit(loss), jax.jit(jax.value_and_grad(loss))
  sp = jax.device_put(student)
  hf = transformers.BertConfig(**{k: v for k, v in bert_config_to_hf(cfg).items()
                                  if k != "architectures"})
  tmodel = transformers.BertModel(hf)
  state = {k: torch.tensor(v) for k, v in params_to_hf_tensors(student).items()}
  tmodel.load_state_dict(state, strict=False)
  tmodel.train()
  for p in tmodel.embeddings.parameters():
    p.requires_grad_(False)
  tids, tmask = torch.from_numpy(ids), torch.from_numpy(mask)

  def torch_forward():
    with torch.no_grad():
      out = tmodel(input_ids=tids, attention_mask=tmask).last_hidden_state
      return float((out.mean(1) ** 2).sum())

  def torch_backward():
    tmodel.zero_grad(set_to_none=True)
    out = tmodel(input_ids=tids, attention_mask=tmask).last_hidden_state
    value = (out.mean(1) ** 2).sum()
    value.backward()
    return value.item()

  jax_value, torch_value = float(forward(sp)), torch_forward()   # also the warm-up calls
  backward(sp)[0].block_until_ready()
  torch_backward()
  print(f"machine: {threads} CPU threads, jax {jax.__version__}, torch {torch.__version__}; "
        f"batch {args.batch} x {args.length} tokens; losses {jax_value:.4f} / {torch_value:.4f}")
  for r in range(3):
    jax_forward = lambda: forward(sp).block_until_ready()
    jax_backward = lambda: backward(sp)[0].block_until_ready()
    jf, jb, tf, tb = (seconds_of(f, 10) for f in (jax_forward, jax_backward, torch_forward,
                                                  torch_backward))
    print(f"round {r + 1}: distill_jax forward {jf:.3f} s, forward + backward {jb:.3f} s "
          f"({jb / jf:.1f}x); PyTorch forward {tf:.3f} s, forward + backward {tb:.3f} s "
          f"({tb / tf:.1f}x)", flush=True)


if __name__ == "__main__":
  main()
