"""The MiniLM job: teacher -> recombined shallower student -> embedding distillation -> STS.

``python -m distill_jax.text.main --config=configs/minilm_l6_to_l3.py --workdir=DIR``

1. The teacher (all-MiniLM-L6-v2 from its package, or any BERT safetensors folder) and the
   STS evaluation pairs; the teacher's Spearman is the reference.
2. Every recombination in ``config.init_variants`` is built and scored with no training (the
   "right after recombination" rows); ``config.student.init`` is the one that is trained.
3. Distillation on unlabelled sentences (``text/distill.py``) with the shared training loop
   (checkpoints, resume, SIGTERM, metrics, held-out Spearman every ``eval_every`` steps).
4. The student is saved with Orbax (``DIR/student/``, loadable by ``sts_eval``) and exported to
   safetensors (``DIR/student_safetensors/``); ``DIR/summary.json`` holds the numbers.
"""
import hashlib
import json
import os
import time
import zlib
from typing import Any, Optional, Sequence

import jax
import numpy as np

from distill_jax import plots, recombine, sharding, train
from distill_jax.checkpoint import Checkpointer
from distill_jax.loop import MetricsWriter, fit
from distill_jax.models.bert import BertConfig, build_encoder, init_params, mean_pool
from distill_jax.paths import count_params
from distill_jax.recombine.accounting import format_accounting, write_accounting
from distill_jax.text import minilm
from distill_jax.text.distill import make_text_train_step
from distill_jax.text.sts import StsPairs, read_sts_csv, sts_score
from distill_jax.text.student import load_text_model, save_student
from distill_jax.text.weights import export_safetensors

# Embeddings and pooler are groups of their own (copied from the teacher by name); the
# encoder's blocks are the layer sequence that strategies select, average or merge.
BERT_RULES = (("regex", r"embeddings/.*", "embeddings"),
              ("depth", r"encoder/layer_(\d+)"),
              ("regex", r"pooler/.*", "pooler"))


def read_sentences(path: str) -> list[str]:
  """Unlabelled sentences: a text file (one per line) or an STS-format CSV (both columns).

  Empty lines are skipped and repeats kept once, in order of first appearance.
  """
  if not path:
    raise ValueError("data.train is empty: give a text file with one sentence per line or an "
                     "STS-format CSV, e.g. --config.data.train=DIR/sts-train.csv")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"data.train: {path!r} does not exist")
  if path.endswith(".csv"):
    pairs = read_sts_csv(path)
    lines = [s for pair in zip(pairs.sentence1, pairs.sentence2) for s in pair]
  else:
    with open(path, encoding="utf-8") as f:
      lines = [line.strip() for line in f]
  sentences = list(dict.fromkeys(s for s in lines if s))
  if not sentences:
    raise ValueError(f"data.train: {path!r} holds no sentences")
  return sentences


def tokenize_all(tokenizer, sentences: Sequence[str], max_length: int) -> dict[str, np.ndarray]:
  """All sentences padded to ``max_length`` once; batches are cut down to their longest row."""
  return tokenizer.encode(list(sentences), max_length, padding="max_length")


def trim(batch: dict, multiple: int = 16) -> dict:
  """Drop padding columns beyond the batch's longest row (rounded up to ``multiple``, so the
  jitted step sees few distinct lengths)."""
  longest = int(batch["attention_mask"].sum(1).max())
  length = min(batch["input_ids"].shape[1], -(-longest // multiple) * multiple)
  return {k: (v[:, :length] if v.ndim == 2 and k != "teacher_embedding" else v)
          for k, v in batch.items()}


def text_apply(encoder):
  """``apply(variables, x, **kw)`` over a dict of token arrays: what recombination's data-driven
  strategies (CKA) call as ``teacher_apply(variables, context.x)``."""
  return lambda variables, x, **kw: encoder.apply(variables, x["input_ids"],
                                                  x["attention_mask"], x["token_type_ids"], **kw)


def student_config(teacher: BertConfig, config) -> BertConfig:
  return teacher.replace(num_layers=config.student.num_layers)


def recombined(teacher_cfg: BertConfig, teacher_params: Any, student_cfg: BertConfig,
               strategy: str, options: dict, rules, sample: dict, seed: int,
               workdir: Optional[str] = None) -> tuple[Any, dict]:
  """A student's parameters built by one recombination strategy, and its accounting."""
  fresh = init_params(student_cfg, jax.random.fold_in(jax.random.PRNGKey(seed), 1))
  context = recombine.Context(text_apply(build_encoder(teacher_cfg)), teacher_params, sample,
                              workdir)
  return recombine.recombine(teacher_params, fresh, strategy=strategy, rules=rules,
                             context=context, **options)


def choose_layers(teacher_cfg: BertConfig, teacher_params: Any, student_cfg: BertConfig,
                  tokenizer, sentences: Sequence[str], rules, seed: int,
                  max_length: int, batch_size: int) -> tuple[tuple[int, ...], dict]:
  """Evaluate and adjust, without labels: every choice of the student's depth among the
  teacher's layers is built by ``select`` and scored by its mean cosine with the teacher's
  embeddings of ``sentences``; returns the best layers and every score."""
  import itertools
  target = minilm.embed(teacher_params, teacher_cfg, tokenizer, sentences, batch_size,
                        max_length)
  scores = {}
  for layers in itertools.combinations(range(teacher_cfg.num_layers), student_cfg.num_layers):
    params, _ = recombined(teacher_cfg, teacher_params, student_cfg, "select",
                           {"layers": layers}, rules, None, seed)
    got = minilm.embed(params, student_cfg, tokenizer, sentences, batch_size, max_length)
    scores[",".join(map(str, layers))] = float(np.mean(np.sum(got * target, -1)))
  best = max(scores, key=scores.get)
  return tuple(int(i) for i in best.split(",")), scores


def embedding_cache(workdir: str, teacher_cfg: BertConfig, teacher_params: Any,
                    tokens: dict, batch_size: int) -> np.ndarray:
  """The teacher's mean-pooled (unnormalised) embeddings of every training sentence, computed
  once and kept in ``WORKDIR/teacher_cache/embeddings.npy`` under a key over the teacher's
  weights and the token arrays (a stale cache is rebuilt)."""
  from distill_jax.teacher_cache import hash_tree, load_or_build
  h = hashlib.sha256()
  hash_tree(h, {"teacher": teacher_params, "tokens": tokens})
  h.update(json.dumps(teacher_cfg.to_dict(), sort_keys=True).encode())
  encoder = build_encoder(teacher_cfg)

  @jax.jit
  def pooled(params, batch):
    out = encoder.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                        batch["token_type_ids"])
    return mean_pool(out.last_hidden_state, batch["attention_mask"])

  def build():
    n = len(tokens["input_ids"])
    out = np.zeros((n, teacher_cfg.hidden_size), np.float32)
    for start in range(0, n, batch_size):
      idx = np.arange(start, min(start + batch_size, n))
      idx = np.pad(idx, (0, batch_size - len(idx)), mode="edge")   # one compiled batch size
      batch = trim({k: v[idx] for k, v in tokens.items()})
      out[idx] = np.asarray(pooled(teacher_params, batch))
    return {"teacher_embedding": out}
  return load_or_build(workdir, h.hexdigest(), build)["teacher_embedding"]


def run(config, workdir: str) -> dict:
  """The whole job; returns (and writes) the summary."""
  start = time.time()
  os.makedirs(workdir, exist_ok=True)
  mesh = sharding.make_mesh(config.mesh.to_dict())
  teacher_cfg, teacher_params, tokenizer = load_text_model(config.teacher.model)
  eval_pairs = read_sts_csv(config.data.eval)
  sentences = read_sentences(config.data.train)
  writer = MetricsWriter(os.path.join(workdir, "metrics.jsonl"),
                         tensorboard_dir=os.path.join(workdir, "tensorboard"))

  def spearman(cfg: BertConfig, params: Any) -> float:
    return sts_score(lambda s: minilm.embed(params, cfg, tokenizer, s, config.eval_batch_size,
                                            config.data.eval_max_length), eval_pairs)

  summary = {"teacher": {"model": config.teacher.model, "layers": teacher_cfg.num_layers,
                         "params": count_params(teacher_params),
                         "spearman": spearman(teacher_cfg, teacher_params)},
             "eval": {"data": config.data.eval, "pairs": len(eval_pairs)},
             "train": {"data": config.data.train, "sentences": len(sentences)}}
  print(f"teacher ({teacher_cfg.num_layers} layers): STS Spearman "
        f"{summary['teacher']['spearman']:.2f} on {len(eval_pairs)} pairs")

  student_cfg = student_config(teacher_cfg, config)
  sample = tokenize_all(tokenizer, sentences[:config.student.init.num_examples], 64)
  init = config.student.init
  summary["init_variants"] = {}
  for name, strategy, options in config.init_variants:
    params, report = recombined(teacher_cfg, teacher_params, student_cfg, strategy,
                                dict(options), init.rules, sample, config.seed)
    summary["init_variants"][name] = {"strategy": strategy, "options": dict(options),
                                      "spearman": spearman(student_cfg, params),
                                      "reused_params": report["reused_params"]}
    print(f"  student right after recombination, {name}: STS Spearman "
          f"{summary['init_variants'][name]['spearman']:.2f}")

  options = dict(init.get(init.strategy, {}))
  if init.strategy == "select" and init.choose_by_agreement:
    options["layers"], scores = choose_layers(
        teacher_cfg, teacher_params, student_cfg, tokenizer,
        sentences[:init.choose_by_agreement], init.rules, config.seed,
        config.data.max_length, config.eval_batch_size)
    summary["layer_choice"] = {"chosen": options["layers"], "mean_cosine_with_teacher": scores}
    print(f"student layers chosen by agreement with the teacher on "
          f"{min(init.choose_by_agreement, len(sentences))} training sentences: "
          f"{options['layers']} (mean cosine {scores[','.join(map(str, options['layers']))]:.3f})")
  params, report = recombined(teacher_cfg, teacher_params, student_cfg, init.strategy, options,
                              init.rules, sample, config.seed, workdir)
  if jax.process_index() == 0:
    write_accounting(report, workdir)
  print(format_accounting(report))
  at_init = spearman(student_cfg, params)
  layer_map = tuple(config.distill.layer_map) or tuple(options.get("layers", ()))
  params = distill(config, workdir, mesh, writer, teacher_cfg, teacher_params, student_cfg,
                   params, tokenize_all(tokenizer, sentences, config.data.max_length),
                   lambda p: {"spearman": spearman(student_cfg, p)}, layer_map)
  summary["student"] = {"layers": student_cfg.num_layers, "params": count_params(params),
                         "init": {"strategy": init.strategy, "spearman": at_init},
                         "spearman": spearman(student_cfg, params),
                         "saved": os.path.join(workdir, "student")}
  summary["student"]["of_teacher"] = summary["student"]["spearman"] / \
      summary["teacher"]["spearman"]
  summary["compression"] = summary["teacher"]["params"] / summary["student"]["params"]
  if jax.process_index() == 0:
    save_student(os.path.join(workdir, "student"), params, student_cfg)
    if config.export_safetensors:
      export_safetensors(params, os.path.join(workdir, "student_safetensors"), student_cfg)
    summary["wall_seconds"] = time.time() - start
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
    plots.plot_curves(os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "curves.png"),
                      title="3-layer student distilled from all-MiniLM-L6-v2 "
                            "(test points: STS held-out pairs)",
                      metric="spearman", metric_label="STS Spearman x100 (held-out pairs)",
                      metric_range=None)
  print(format_summary(summary))
  return summary


def distill(config, workdir: str, mesh, writer, teacher_cfg: BertConfig, teacher_params: Any,
            student_cfg: BertConfig, params: Any, tokens: dict, eval_fn,
            layer_map: Sequence[int] = ()) -> Any:
  """Train the student's ``params`` on ``tokens`` (one phase of the shared loop);
  ``layer_map[j]`` is the teacher layer student layer j matches (hidden-state term)."""
  d, steps = config.distill, config.student.steps
  online = bool(d.hidden or d.relation) or not d.cache
  if not online:
    tokens = dict(tokens, teacher_embedding=embedding_cache(
        workdir, teacher_cfg, teacher_params, tokens, config.eval_batch_size))
  rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), zlib.crc32(b"student"))
  student = build_encoder(student_cfg)
  tx = train.make_optimizer(config.student.learning_rate, steps,
                            frozen=tuple(config.student.get("frozen", ())))
  state = train.create_state(student, params, tx, rng)
  state_shardings = sharding.tree_shardings(state, config.sharding.student, mesh)
  step = make_text_train_step(
      student.apply, build_encoder(teacher_cfg).apply if online else None,
      embedding_mse_weight=d.embedding_mse, embedding_cosine_weight=d.embedding_cosine,
      hidden_weight=d.hidden, layer_map=tuple(layer_map), relation_weight=d.relation,
      relation_layers=tuple(d.relation_layers), relation_heads=d.relation_heads,
      num_student_layers=student_cfg.num_layers, num_teacher_layers=teacher_cfg.num_layers,
      dropout=config.student.dropout)
  jitted = train.jit_train_step(step, mesh, state_shardings)
  n = len(tokens["input_ids"])
  from distill_jax.data import local_indices

  def batch_fn(i: int) -> dict:
    idx = local_indices(n, config.batch_size, config.seed, i, jax.process_index(),
                        jax.process_count())
    return trim({k: v[idx] for k, v in tokens.items()})

  checkpointer = Checkpointer(os.path.join(workdir, "student_train", "checkpoints"))
  state = fit(phase="student", state=state, step_fn=jitted, batch_fn=batch_fn, num_steps=steps,
              mesh=mesh, state_shardings=state_shardings, checkpointer=checkpointer,
              batch_size=config.batch_size, teacher_params=teacher_params if online else None,
              writer=writer, log_every=config.log_every,
              checkpoint_every=config.checkpoint_every,
              learning_rate_fn=train.learning_rate_schedule(config.student.learning_rate, steps),
              eval_fn=eval_fn, eval_every=config.eval_every)
  checkpointer.close()
  return jax.device_get(state.params)


def format_summary(summary: dict) -> str:
  t, s = summary["teacher"], summary["student"]
  lines = [f"{'model':<40} {'layers':>6} {'params':>12} {'STS Spearman':>12}",
           f"{'teacher ' + t['model']:<40} {t['layers']:>6} {t['params']:>12,} "
           f"{t['spearman']:>12.2f}"]
  for name, v in summary["init_variants"].items():
    lines.append(f"{'student, recombined: ' + name:<40} {s['layers']:>6} {s['params']:>12,} "
                 f"{v['spearman']:>12.2f}")
  lines.append(f"{'student, distilled (' + s['init']['strategy'] + ')':<40} {s['layers']:>6} "
               f"{s['params']:>12,} {s['spearman']:>12.2f}")
  lines.append(f"student keeps {100 * s['of_teacher']:.1f}% of the teacher's Spearman; "
               f"compression {summary['compression']:.2f}x")
  return "\n".join(lines)


def validate(config) -> None:
  """Check the config before anything is written: data files, teacher, plan, loss settings."""
  read_sentences(config.data.train)
  if not config.data.eval:
    raise ValueError("data.eval is empty: give an STS-format CSV (e.g. sts-dev.csv)")
  read_sts_csv(config.data.eval)
  teacher_cfg, teacher_params, _ = load_text_model(config.teacher.model)
  student_cfg = student_config(teacher_cfg, config)
  if not 1 <= student_cfg.num_layers <= teacher_cfg.num_layers:
    raise ValueError(f"student.num_layers={student_cfg.num_layers} must be in [1, "
                     f"{teacher_cfg.num_layers}] (the teacher's depth)")
  d = config.distill
  if d.hidden and d.layer_map:
    if len(d.layer_map) != student_cfg.num_layers or not all(
        0 <= i < teacher_cfg.num_layers for i in d.layer_map):
      raise ValueError(f"distill.layer_map={tuple(d.layer_map)} needs one teacher layer in "
                       f"[0, {teacher_cfg.num_layers - 1}] per student layer "
                       f"({student_cfg.num_layers})")
  if d.relation and teacher_cfg.hidden_size % d.relation_heads:
    raise ValueError(f"distill.relation_heads={d.relation_heads} does not divide the hidden "
                     f"size {teacher_cfg.hidden_size}")
  fresh = jax.eval_shape(lambda: init_params(student_cfg, jax.random.PRNGKey(0)))
  fresh = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), fresh)
  init = config.student.init
  variants = list(config.init_variants) + [(init.strategy, init.strategy,
                                            init.get(init.strategy, {}))]
  for name, strategy, options in variants:
    if strategy == "similarity":   # data-driven: checking it would run the teacher
      recombine.STRATEGIES.get(strategy)
      continue
    try:
      recombine.recombine(teacher_params, fresh, strategy=strategy, rules=init.rules,
                          **dict(options))
    except (ValueError, KeyError) as e:
      raise ValueError(f"recombination {name!r}: {e}") from None
