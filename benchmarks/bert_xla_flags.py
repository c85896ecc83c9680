r"""The 3-block MiniLM student's forward and forward + backward under XLA:CPU flag sets: which
library XLA hands dots (and elementwise work) to changes where the distillation step's time
goes (benchmarks/minilm_step.py; docs/minilm.md).

  python benchmarks/bert_xla_flags.py [--batch=32] [--length=48]

Each flag set runs in its own process (XLA reads XLA_FLAGS at start-up): all-MiniLM-L6-v2's
blocks 0, 4, 5 and embeddings (frozen: under stop_gradient), dropout off, float32, a random
token batch without padding, loss sum(mean-pooled hidden states ^ 2), jitted; seconds per call,
the median of 10 after a warm-up, two rounds. About 1 min per flag set on 2 cores.
"""
import argparse
import os
import subprocess
import sys

FLAG_SETS = ("", "--xla_cpu_use_onednn=true", "--xla_cpu_use_xnnpack=true",
             "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
             "--xla_cpu_experimental_ynn_fusion_type=-LIBRARY_FUSION_TYPE_DOT",
             "--xla_cpu_experimental_onednn_fusion_type=LIBRARY_FUSION_TYPE_DOT",
             "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
             "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT,"
             "LIBRARY_FUSION_TYPE_ELTWISE")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(batch: int, length: int) -> None:
  """One flag set (this process's XLA_FLAGS): prints the loss and the timings."""
  sys.path.insert(0, ROOT)
  import jax
  import jax.numpy as jnp
  import numpy as np
  from benchmarks.lm_kd_torch import seconds_of
  from distill_jax.models.bert import BertConfig, BertEncoder, mean_pool
  from distill_jax.text import minilm
  config, params, _ = minilm.load_minilm()
  cfg = BertConfig(**{k: v for k, v in config.items() if k != "name"}).replace(
      num_layers=3, hidden_dropout=0.0, attention_dropout=0.0)
  student = {**params, "encoder": {f"layer_{j}": params["encoder"][f"layer_{i}"]
                                   for j, i in enumerate((0, 4, 5))}}
  ids = jnp.asarray(np.random.default_rng(0).integers(1000, 20000, (batch, length)), jnp.int32)
  mask = jnp.ones_like(ids)
  module = BertEncoder(cfg)

  def loss(p):
    p = {**p, "embeddings": jax.lax.stop_gradient(p["embeddings"])}
    return jnp.sum(mean_pool(module.apply({"params": p}, ids, mask).last_hidden_state, mask) ** 2)

  forward, backward = jax.jit(loss), jax.jit(jax.value_and_grad(loss))
  sp = jax.device_put(student)
  value = float(forward(sp))
  backward(sp)[0].block_until_ready()
  rounds = [(seconds_of(lambda: forward(sp).block_until_ready(), 10),
             seconds_of(lambda: backward(sp)[0].block_until_ready(), 10)) for _ in range(2)]
  print(f"loss {value:.4f}; " + "; ".join(f"forward {f:.3f} s, forward + backward {b:.3f} s"
                                          for f, b in rounds), flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--length", type=int, default=48)
  parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.one:
    return measure(args.batch, args.length)
  for flags in FLAG_SETS:
    out = subprocess.run([sys.executable, __file__, "--one", f"--batch={args.batch}",
                          f"--length={args.length}"], env=dict(os.environ, XLA_FLAGS=flags),
                         capture_output=True, text=True)
    line = out.stdout.strip().splitlines()[-1] if out.returncode == 0 else (
        f"failed: {out.stderr.strip().splitlines()[-1:]}")
    print(f"{flags or '(default)'}\n  {line}", flush=True)


if __name__ == "__main__":
  main()
