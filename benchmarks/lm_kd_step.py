r"""One LM distillation step's speed and model-FLOPs utilisation: a Llama student learning from
a Llama teacher through ``train.make_train_step`` with the "kd" and "ce" terms.

  python benchmarks/lm_kd_step.py --dtype=bfloat16 --batch=16 --length=1024 --peak_tflops=989
  python benchmarks/lm_kd_step.py --tiny --steps=3      # CPU smoke test, seconds

Teacher: SmolLM2-135M's shape (30 blocks, width 576, 9 heads / 3 key-value heads, vocabulary
49152), random weights unless ``--teacher=smollm2`` (the packaged GGUF; speed does not depend
on the values). Student: the same with ``--student_layers`` blocks (15, as
configs/smollm2_wikitext.py). ``--dtype`` is both models' compute dtype: the student keeps
float32 parameters and Adam moments (mixed precision), the teacher's parameters are cast to
it (as ``distill.teacher_dtype`` does). Loss ``0.5 kd(T=1) + 0.5 ce``; Adam; one device.

Model FLOPs per step (the MFU convention of PaLM, Chowdhery et al. 2022, appendix B), with
tokens = batch x length:
  6 x N_student x tokens + 2 x N_teacher x tokens          (the parameter matmuls)
  + 12 x layers_s x width_s x length x tokens + 4 x layers_t x width_t x length x tokens
                                                          (attention scores and values)
N counts every parameter once, with a tied embedding as the output projection it is used as
(its lookup is free; an untied input embedding is left out). The attention terms count the
whole L x L score matrix (no causal halving), as PaLM does. MFU = model FLOPs / step time /
``--peak_tflops``; the FLOPs XLA executes (its cost analysis) are printed beside them.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from distill_jax import losses, models, train  # noqa: E402
from distill_jax.models.llama import LlamaConfig  # noqa: E402

TERMS = (("kd", 0.5, {"temperature": 1.0}), ("ce", 0.5, {}))
# A few-second CPU check of the whole path (4 blocks vs 2, width 64, vocabulary 512).
TINY = dict(vocab_size=512, hidden_size=64, num_layers=4, num_heads=4, num_kv_heads=2,
            intermediate_size=128)


def matmul_params(config: LlamaConfig) -> int:
  """Parameters a token's forward pass multiplies by (once each; see the module docstring)."""
  c, hd = config, config.head_dim
  block = (c.hidden_size * (c.num_heads + 2 * c.num_kv_heads) * hd      # q, k, v
           + c.num_heads * hd * c.hidden_size                            # output
           + 3 * c.hidden_size * c.intermediate_size + 2 * c.hidden_size)   # MLP, norms
  return c.num_layers * block + c.hidden_size + c.vocab_size * c.hidden_size   # + final norm, head


def model_flops(student: LlamaConfig, teacher: LlamaConfig, batch: int,
                length: int) -> tuple[float, float]:
  """(parameter FLOPs, attention FLOPs) of one KD step, by the convention above."""
  tokens = batch * length
  dense = (6 * matmul_params(student) + 2 * matmul_params(teacher)) * tokens
  attention = (12 * student.num_layers * student.hidden_size
               + 4 * teacher.num_layers * teacher.hidden_size) * length * tokens
  return float(dense), float(attention)


def compile_step(step, state, batch, teacher_params) -> tuple:
  """``(compiled step (state donated), seconds to compile, FLOPs XLA executes per step)``."""
  start = time.perf_counter()
  compiled = jax.jit(step, donate_argnums=(0,)).lower(state, batch, teacher_params).compile()
  seconds = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return compiled, seconds, float((cost or {}).get("flops", 0.0))


def parse_args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--dtype", default="bfloat16", help="compute dtype of both models")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--length", type=int, default=1024)
  parser.add_argument("--steps", type=int, default=20, help="timed steps (after 3 warm-up)")
  parser.add_argument("--student_layers", type=int, default=15)
  parser.add_argument("--teacher", default="random", choices=("random", "smollm2"),
                      help="teacher weights: random, or the packaged SmolLM2 GGUF")
  parser.add_argument("--peak_tflops", type=float,
                      default=float(os.environ.get("PEAK_TFLOPS", 989)),
                      help="the device's dense peak in the step's dtype (env PEAK_TFLOPS; "
                           "989: H100/H200 SXM bfloat16)")
  parser.add_argument("--tiny", action="store_true",
                      help="tiny models (a seconds-long CPU check of the path)")
  return parser.parse_args()


def main() -> None:
  args = parse_args()
  shape = TINY if args.tiny else {}
  tparams = None
  if args.teacher == "smollm2":
    from distill_jax.text import gguf
    shape, tparams, _ = gguf.read_gguf(gguf.smollm2_path())
  tconfig = LlamaConfig(**{**shape, "dtype": args.dtype})
  sconfig = LlamaConfig(**{**shape, "dtype": args.dtype,
                           "num_layers": min(args.student_layers, tconfig.num_layers)
                           if not args.tiny else 2})
  teacher = models.build(dict(name="llama", **tconfig.to_dict()), {})
  student = models.build(dict(name="llama", **sconfig.to_dict()), {})
  rng = np.random.default_rng(0)
  seq = rng.integers(0, tconfig.vocab_size, (args.batch, args.length + 1), dtype=np.int32)
  batch = jax.device_put({"tokens": seq[:, :-1], "y": seq[:, 1:]})
  example = {"tokens": seq[:1, :8]}
  if tparams is None:
    tparams = teacher.init(jax.random.PRNGKey(0), example)
  cast = (lambda a: jnp.asarray(a, args.dtype)) if args.dtype != "float32" else jnp.asarray
  tparams = jax.tree.map(cast, tparams)
  sparams = student.init(jax.random.PRNGKey(1), example)
  state = train.TrainState.create(sparams, train.make_optimizer(1e-4, 10_000),
                                  jax.random.PRNGKey(2))
  step = train.make_train_step(student, losses.bind(TERMS, "terms"), teacher,
                               teacher_dtype=None if args.dtype == "float32" else args.dtype)

  device = jax.devices()[0]
  print(f"device: {device.device_kind} ({device.platform}), {jax.device_count()} device(s), "
        f"jax {jax.__version__}; dtype {args.dtype}, batch {args.batch} x {args.length} tokens")
  compiled, compile_s, executed = compile_step(step, state, batch, tparams)

  for _ in range(3):                              # warm-up
    state, metrics = compiled(state, batch, tparams)
  float(metrics["loss"])
  start = time.perf_counter()
  for _ in range(args.steps):
    state, metrics = compiled(state, batch, tparams)
  loss = float(metrics["loss"])                   # waits for the last step
  seconds = (time.perf_counter() - start) / args.steps

  dense, attention = model_flops(sconfig, tconfig, args.batch, args.length)
  flops = dense + attention
  peak = args.peak_tflops * 1e12
  print(f"teacher {tconfig.num_layers} blocks ({matmul_params(tconfig) / 1e6:.1f}M matmul "
        f"params, {args.teacher} weights), student {sconfig.num_layers} blocks "
        f"({matmul_params(sconfig) / 1e6:.1f}M); compile {compile_s:.1f} s; loss {loss:.3f}")
  print(f"model FLOPs per step: {flops / 1e12:.4g} TFLOP ({dense / 1e12:.4g} parameter "
        f"matmuls + {attention / 1e12:.4g} attention); XLA executes {executed / 1e12:.4g}")
  print(f"step: {seconds * 1e3:.2f} ms ({args.steps} steps), "
        f"{args.batch * args.length / seconds:,.0f} tokens/s, {flops / seconds / 1e12:.4g} "
        f"TFLOP/s model")
  print(f"MFU against {args.peak_tflops:g} TFLOP/s: {flops / seconds / peak:.3f} "
        f"(without the attention terms {dense / seconds / peak:.3f})")


if __name__ == "__main__":
  main()
