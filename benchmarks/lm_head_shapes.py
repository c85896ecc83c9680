r"""The tied output projection's matmuls of the LM distillation step (benchmarks/lm.py), alone:
SmolLM2-135M's 49,152 x 576 embedding against 2 x 256 tokens, in the layouts XLA may pick and
in vocabulary chunks, GFLOP/s each (docs/benchmarks.md: why the step's head runs below the
matmul ceiling).

  python benchmarks/lm_head_shapes.py      # about 1 min on 2 cores

Each: jitted, the median of 7 calls after a warm-up; the ceiling is a 2048^2 float32 matmul.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.lm_kd_torch import seconds_of  # noqa: E402

TOKENS, HIDDEN, VOCAB, CHUNK = 512, 576, 49152, 8192


def main() -> None:
  rng = np.random.default_rng(0)
  h = jnp.asarray(rng.standard_normal((TOKENS, HIDDEN)), jnp.float32)
  e = jnp.asarray(rng.standard_normal((VOCAB, HIDDEN)) * 0.02, jnp.float32)
  g = jnp.asarray(rng.standard_normal((TOKENS, VOCAB)) * 1e-3, jnp.float32)
  g_t, e_t = jnp.asarray(np.asarray(g).T.copy()), jnp.asarray(np.asarray(e).T.copy())
  flops = 2 * TOKENS * HIDDEN * VOCAB
  cases = (
      ("logits h @ E.T (the forward)", lambda h, e: h @ e.T, (h, e)),
      ("logits h @ E.T, E stored transposed", lambda h, e_t: h @ e_t, (h, e_t)),
      ("logits in vocabulary chunks", lambda h, e: jnp.concatenate(
          [h @ e[i:i + CHUNK].T for i in range(0, VOCAB, CHUNK)], 1), (h, e)),
      ("dh = g @ E (contraction over the vocabulary)", lambda g, e: g @ e, (g, e)),
      ("dh in vocabulary chunks, summed", lambda g, e: sum(
          g[:, i:i + CHUNK] @ e[i:i + CHUNK] for i in range(0, VOCAB, CHUNK)), (g, e)),
      ("dE = g.T @ h (vocab, hidden)", lambda g, h: g.T @ h, (g, h)),
      ("dE from g stored transposed", lambda g_t, h: g_t @ h, (g_t, h)),
      ("dE.T = h.T @ g (hidden, vocab)", lambda g, h: h.T @ g, (g, h)),
  )
  for name, fn, args in cases:
    f = jax.jit(fn)
    jax.block_until_ready(f(*args))
    t = seconds_of(lambda: jax.block_until_ready(f(*args)), 7)
    print(f"{name:48s} {t * 1e3:7.1f} ms  {flops / t / 1e9:6.1f} GFLOP/s", flush=True)
  a = jnp.asarray(rng.standard_normal((2048, 2048)), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  t = seconds_of(lambda: f(a).block_until_ready(), 7)
  print(f"{'ceiling: 2048^2 float32 matmul':48s} {t * 1e3:7.1f} ms  "
        f"{2 * 2048 ** 3 / t / 1e9:6.1f} GFLOP/s")


if __name__ == "__main__":
  main()
