"""The LM distillation step, distill_jax vs the same step written plainly in PyTorch (the "kd"
measurement of benchmarks/lm.py, whose docstring says exactly what each side runs), and the
timing helpers benchmarks/lm.py shares.
"""
import argparse
import os
import time
from typing import Callable

# The distillation step (as benchmarks/lm_kd_step.py): 0.5 KD at T = 1 + 0.5 label CE; the
# student keeps every other teacher block (15 of SmolLM2's 30, first and last included).
KD_TEMPERATURE, KD_STUDENT_LAYERS, KD_LEARNING_RATE = 1.0, 15, 1e-4
KD_RTOL = 1e-4


def median(values) -> float:
  import numpy as np
  return float(np.median(values))


def fmt(values, unit: str = "tokens/s") -> str:
  return ", ".join(f"{v:.1f}" for v in values) + f" {unit}; median {median(values):.1f}"


def torch_llama(config: dict, params, special: dict):
  """``LlamaForCausalLM`` (float32) holding ``params`` (distill_jax's Flax arrays) copied in
  transformers' layout: the same values, no file read."""
  import torch
  import transformers
  from distill_jax.models.llama import LlamaConfig
  from distill_jax.text import hf_llama
  hf_config = transformers.LlamaConfig(**hf_llama.config_to_hf(
      LlamaConfig(**config), special.get("bos"), special.get("eos")))
  tmodel = transformers.LlamaForCausalLM(hf_config).to(torch.float32)
  state = {k: torch.tensor(v) for k, v in hf_llama.params_to_hf(params).items()}
  missing, unexpected = tmodel.load_state_dict(state, strict=False)
  assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
  tmodel.tie_weights()
  return tmodel


def seconds_of(run: Callable[[], object], repeats: int) -> float:
  """Median seconds of ``repeats`` calls of ``run`` (which must block on its result)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return median(times)


def kd_step(args: argparse.Namespace, config: dict, params, special: dict) -> list[str]:
  """The LM distillation step, distill_jax vs PyTorch eager (the module docstring's "kd");
  prints its lines, returns the summary lines."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  import torch.nn.functional as F

  from benchmarks import common
  from benchmarks.lm_kd_step import TERMS, compile_step, matmul_params, model_flops
  from distill_jax import losses, models, train
  from distill_jax.models.llama import LlamaConfig

  assert TERMS == (("kd", 0.5, {"temperature": KD_TEMPERATURE}), ("ce", 0.5, {})), TERMS
  batch_size, length, temp = args.kd_batch, args.kd_length, KD_TEMPERATURE
  tconfig = LlamaConfig(**config)
  assert tconfig.dtype == "float32", tconfig.dtype
  sconfig = LlamaConfig(**{**config, "num_layers": KD_STUDENT_LAYERS})
  # The student: every other teacher block (first and last kept), the embedding, final norm;
  # copies, since the train step donates the student's buffers and the teacher's are reused.
  chosen = [int(i) for i in np.linspace(0, tconfig.num_layers - 1, sconfig.num_layers).round()]
  sparams = {k: v for k, v in params.items() if not k.startswith("layer_")}
  sparams.update({f"layer_{j}": params[f"layer_{i}"] for j, i in enumerate(chosen)})
  sparams = jax.tree.map(lambda a: jnp.array(a, copy=True), sparams)
  teacher = models.build(dict(name="llama", **tconfig.to_dict()), {})
  student = models.build(dict(name="llama", **sconfig.to_dict()), {})
  seq = np.random.default_rng(1).integers(0, tconfig.vocab_size, (batch_size, length + 1),
                                          dtype=np.int32)
  tokens, targets = seq[:, :-1], seq[:, 1:]
  tokens_per_step = tokens.size

  # PyTorch first: the step below donates (invalidates) the Flax student's buffers.
  tstudent = torch_llama(sconfig.to_dict(), sparams, special).train()
  tteacher = torch_llama(tconfig.to_dict(), params, special).eval().requires_grad_(False)
  opt = torch.optim.Adam(tstudent.parameters(), lr=KD_LEARNING_RATE)
  tids = torch.from_numpy(tokens.astype(np.int64))
  ty = torch.from_numpy(targets.astype(np.int64)).reshape(-1)

  def torch_loss(s_logits, t_logits):
    vocab = s_logits.shape[-1]
    s, t = s_logits.reshape(-1, vocab), t_logits.reshape(-1, vocab)
    soft = temp * temp * F.kl_div(F.log_softmax(s / temp, -1), F.log_softmax(t / temp, -1),
                                  reduction="batchmean", log_target=True)   # mean over tokens
    hard = F.cross_entropy(s, ty)
    return 0.5 * soft + 0.5 * hard, soft, hard

  def run_torch() -> tuple[float, float, float]:
    with torch.no_grad():
      t_logits = tteacher(tids).logits
    loss, soft, hard = torch_loss(tstudent(tids).logits, t_logits)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item(), soft.item(), hard.item()

  # distill_jax: the library's step, jitted as the runner does (state donated).
  batch = jax.device_put({"tokens": tokens, "y": targets})
  state = train.TrainState.create(sparams, train.make_optimizer(KD_LEARNING_RATE, 10_000),
                                  jax.random.PRNGKey(2))
  step = train.make_train_step(student, losses.bind(TERMS, "terms"), teacher)
  compiled, compile_s, executed = compile_step(step, state, batch, params)
  holder = {"state": state}

  def run_flax() -> tuple[float, float, float]:
    holder["state"], metrics = compiled(holder["state"], batch, params)
    return float(metrics["loss"]), float(metrics["kd"]), float(metrics["ce"])

  # Parity: the first step's loss is computed before its update, on identical weights.
  first_flax, first_torch = run_flax(), run_torch()
  rel = abs(first_flax[0] - first_torch[0]) / abs(first_torch[0])
  dense, attention = model_flops(sconfig, tconfig, batch_size, length)
  flops = dense + attention
  print(f"kd step: batch {batch_size} x {length} tokens, float32; teacher "
        f"{tconfig.num_layers} blocks ({matmul_params(tconfig) / 1e6:.1f}M matmul params, GGUF "
        f"weights), student {sconfig.num_layers} blocks ({matmul_params(sconfig) / 1e6:.1f}M, "
        f"teacher blocks {chosen}); loss 0.5 kd(T={temp:g}) + 0.5 ce; Adam lr "
        f"{KD_LEARNING_RATE:g}; pytorch attention: {tstudent.config._attn_implementation}")
  print(f"  model FLOPs per step {flops / 1e9:.1f} GFLOP ({dense / 1e9:.1f} parameter matmuls + "
        f"{attention / 1e9:.1f} attention); XLA executes {executed / 1e9:.1f}; Flax compile "
        f"{compile_s:.1f} s")
  print(f"  first-step loss (before the update): flax {first_flax[0]:.6f} (kd "
        f"{first_flax[1]:.6f}, ce {first_flax[2]:.6f}), pytorch {first_torch[0]:.6f} (kd "
        f"{first_torch[1]:.6f}, ce {first_torch[2]:.6f}); relative difference {rel:.1e}: "
        f"{'agree' if rel <= KD_RTOL else 'DISAGREE'} (rtol {KD_RTOL:g})")

  for _ in range(args.kd_warmup):                # Adam's moments exist from the first step
    run_flax(), run_torch()
  load_before = os.getloadavg()[0]
  rates = {"flax": [], "torch": []}
  ceilings = []
  last = {}
  for _ in range(args.kd_rounds):
    ceilings.append(common.matmul_flops_per_second(seconds=1.0))
    for side, run in (("flax", run_flax), ("torch", run_torch)):
      time.sleep(0.5)    # let torch's spinning OpenMP threads and XLA's settle
      start = time.perf_counter()
      for _ in range(args.kd_steps):
        last[side] = run()[0]
      rates[side].append(args.kd_steps * tokens_per_step / (time.perf_counter() - start))
  steps_done = 1 + args.kd_warmup + args.kd_rounds * args.kd_steps
  ratio = median(np.array(rates["flax"]) / np.array(rates["torch"]))
  ceiling = np.array(ceilings)
  fraction = {side: median(np.array(r) / tokens_per_step * flops / ceiling)
              for side, r in rates.items()}
  print(f"  matmul ceiling (2048^2 float32, XLA), {args.kd_rounds} rounds: "
        + ", ".join(f"{c / 1e9:.1f}" for c in ceilings) + " GFLOP/s; 1-minute load average "
        f"{load_before:.2f} before the rounds, {os.getloadavg()[0]:.2f} after (this process "
        f"alone: about {args.threads}; more: others share the cores)")
  for side, name in (("flax", "flax (make_train_step, jit)"),
                     ("torch", "pytorch (eager, Adam)")):
    step_s = tokens_per_step / median(rates[side])
    print(f"  {name}, {args.kd_rounds} rounds of {args.kd_steps} steps: {fmt(rates[side])} "
          f"({step_s:.2f} s/step); {fraction[side]:.2f} of the matmul ceiling by model FLOPs")
  print(f"  loss after {steps_done} steps on the same batch: flax {last['flax']:.6f}, pytorch "
        f"{last['torch']:.6f}")

  if args.kd_anatomy:
    kd_anatomy(jax, jnp, np, torch, teacher, student, params, holder["state"].params, batch,
               tids, tteacher, tstudent, torch_loss, losses, median(rates["flax"]),
               median(rates["torch"]), tokens_per_step, args.kd_steps)
  return [f"kd step flax / pytorch eager (median of per-round ratios): {ratio:.2f}x (the "
          f"project's goal: 1.2x); of the matmul ceiling: flax {fraction['flax']:.2f}, "
          f"pytorch {fraction['torch']:.2f}"]


def kd_anatomy(jax, jnp, np, torch, teacher, student, tparams, sparams, batch, tids, tteacher,
               tstudent, torch_loss, losses, flax_rate, torch_rate, tokens_per_step,
               repeats) -> None:
  """Where each side's step goes: the teacher's forward, the student's forward + loss (no
  gradient), the loss alone (forward; forward + gradient) on fixed logits; the rest of the
  step is the student's backward and Adam."""
  repeats = max(repeats, 2)

  def loss_of(s_logits, t_logits, y):
    s, t = {"logits": s_logits}, {"logits": t_logits}
    return (0.5 * losses.kd(s, t, {}, temperature=KD_TEMPERATURE)
            + 0.5 * losses.ce(s, None, {"y": y}))

  t_fwd = jax.jit(lambda p, b: teacher.apply(p, b)[0]["logits"])
  s_fwd_loss = jax.jit(lambda p, b, t: loss_of(student.apply(p, b, train=True)[0]["logits"], t,
                                               b["y"]))
  loss_only = jax.jit(loss_of)
  loss_grad = jax.jit(jax.value_and_grad(loss_of))
  t_logits = t_fwd(tparams, batch).block_until_ready()
  s_logits = jax.jit(lambda p, b: student.apply(p, b)[0]["logits"])(sparams, batch)
  s_fwd_loss(sparams, batch, t_logits).block_until_ready()
  loss_only(s_logits, t_logits, batch["y"]).block_until_ready()
  jax.block_until_ready(loss_grad(s_logits, t_logits, batch["y"]))
  flax = {
      "teacher forward": seconds_of(lambda: t_fwd(tparams, batch).block_until_ready(), repeats),
      "student forward + loss": seconds_of(
          lambda: s_fwd_loss(sparams, batch, t_logits).block_until_ready(), repeats),
      "loss alone": seconds_of(
          lambda: loss_only(s_logits, t_logits, batch["y"]).block_until_ready(), repeats),
      "loss + its gradient": seconds_of(
          lambda: jax.block_until_ready(loss_grad(s_logits, t_logits, batch["y"])), repeats)}

  with torch.no_grad():
    tt = tteacher(tids).logits
    ts = tstudent(tids).logits
  ts_leaf = ts.clone().requires_grad_(True)

  def torch_loss_grad():
    loss = torch_loss(ts_leaf, tt)[0]
    loss.backward()
    ts_leaf.grad = None

  def no_grad(f):
    def run():
      with torch.no_grad():
        f()
    return run

  time.sleep(0.5)
  pt = {
      "teacher forward": seconds_of(no_grad(lambda: tteacher(tids).logits), repeats),
      "student forward + loss": seconds_of(no_grad(lambda: torch_loss(tstudent(tids).logits,
                                                                      tt)), repeats),
      "loss alone": seconds_of(no_grad(lambda: torch_loss(ts, tt)), repeats),
      "loss + its gradient": seconds_of(torch_loss_grad, repeats)}
  steps = {"flax": tokens_per_step / flax_rate, "torch": tokens_per_step / torch_rate}
  print(f"  anatomy (median of {repeats} calls each, ms; flax / pytorch):")
  for name in flax:
    print(f"    {name}: {flax[name] * 1e3:.0f} / {pt[name] * 1e3:.0f}")
  for side, parts in (("flax", flax), ("torch", pt)):
    parts["rest of the step (student backward, Adam)"] = (
        steps[side] - parts["teacher forward"] - parts["student forward + loss"])
  name = "rest of the step (student backward, Adam)"
  print(f"    {name}: {flax[name] * 1e3:.0f} / {pt[name] * 1e3:.0f} (step "
        f"{steps['flax'] * 1e3:.0f} / {steps['torch'] * 1e3:.0f})")
