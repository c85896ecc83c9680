"""The one config schema: every key, its default and its meaning, for every task. Terms are
``(term, weight, options)``; plans are a ``name`` plus dotted overrides.
"""
import copy
import importlib.util
import os
import re
from typing import Any, Mapping, Optional

import ml_collections

from distill_jax.errors import InputError, MissingInput

LABELS = (("ce", 1.0, {}),)                 # cross-entropy on the labels
HINTON = (("kd", 0.9, {"temperature": 4.0}), ("ce", 0.1, {}))


# A phase's optimizer: "adam" | "sgd" (with momentum, as PyTorch's); learning-rate schedule
# "cosine" (to zero) | "steps" (x decay at each boundary, fractions of the phase) | "constant".
OPTIMIZER = dict(optimizer="adam", momentum=0.9, schedule="cosine", boundaries=(), decay=0.1)


def defaults() -> ml_collections.ConfigDict:
  """Every key with its default; example configs override what they need."""
  c = ml_collections.ConfigDict()
  c.task = "classification"         # a registered task (distill_jax/tasks)
  c.seed = 0
  c.data = dict(
      source="digits",              # a registered source: digits|npz|tfds|mnist1d|sentences
      name="",                      # tfds: the dataset's name, e.g. "mnist"
      path="",                      # npz: the .npz file; sentences: the training text
      eval_path="",                 # held-out file (sentences: an STS CSV or "tfds:glue/stsb")
      data_dir="", download=False,  # tfds: where prepared data lives; may it download
      test_fraction=0.2, split_seed=0,   # digits/npz: seeded held-out fraction
      num_classes=0,                # npz: 0 = max label + 1
      max_length=128,               # text: training sequences are truncated (LMs: packed) here
      eval_max_length=256,          # text: evaluation sequences (LMs: perplexity windows)
      # sentence embeddings: held-out batches run longest first, each at most this many tokens
      # (rows x padded length; larger suits accelerators)
      eval_max_tokens=1024,
      tokenizer="",                 # LMs: "char" | "smollm2" | a .gguf or tokenizer.json file
      documents="raw",              # LMs: "raw" text, or "lines" (one document a line)
      eval_stride=0,                # LMs: perplexity window stride (0: eval_max_length // 2)
      # LMs: perplexity on text of other domains too, ((name, path), ...): each file's last
      # other_eval_tokens tokens (metric perplexity_<name>; never trained on)
      other_eval=(), other_eval_tokens=8192,
      train_sequences=0,            # LMs: train on the first N packed sequences (0: all)
      # text: k > 0 sorts each run of k training batches by length before cutting it, then
      # shuffles the batches (little padding per batch; Hugging Face's group_by_length)
      group_by_length=0,
      # graphs (sources graph_npz | planetoid): the split ("per_class": n train and n val
      # nodes per class, seeded by split_seed, the rest test; "public": Planetoid's), the
      # largest connected component only, feature normalisation ("row" | "none")
      graph=dict(split="per_class", train_per_class=20, val_per_class=30,
                 largest_component=False, normalize="row"),
      # Streaming (distill_jax/data/streaming.py, grain): data.source "array_record" (data.path
      # and data.eval_path: glob patterns of record files, data.num_classes) or "tfds" with
      # stream=True (tfds.data_source over ArrayRecord); each host reads its own shard, batches
      # are a function of (seed, step). num_workers > 0: decoding and augmentation in worker
      # processes.
      stream=False, num_workers=0, eval_split="test",
      # Host-side image augmentation (distill_jax/data/augment.py), so that teacher and student
      # see the same images: per example before batching (e.g. "inception_crop:224", "flip")
      # and per batch (e.g. "crop", "flip", "mixup:0.2", "cutmix:1.0"); eval_example: the
      # held-out images' preprocessing (e.g. "center_crop:224"). Any of them streams the data.
      example_augment=(), batch_augment=(), eval_example=(),
      # text classification: `copies` unlabelled altered copies of each training sentence
      # (n-gram sampling, then masking; Tang et al. 2019) that only the teacher terms see
      augment=dict(copies=0, mask_prob=0.1, ngram_prob=0.25, seed=0),
      # text classification: only a seeded fraction of the training rows keeps its label; the
      # others stay in the transfer set unlabelled (semi-supervised KD: the teacher fine-tunes
      # and the labels-only phases train on the labelled rows, the teacher terms see all)
      labelled=dict(fraction=1.0, seed=0))
  c.batch_size = 64
  c.eval_batch_size = 512
  c.eval_cache = False              # remember evaluations by (params, data, settings) across runs
  c.micro_batches = 1               # gradient accumulation: each batch in k parts
  c.mesh = dict(data=-1)            # {axis: size}, -1: the remaining devices
  # (regex over "/"-joined paths of the train state / teacher params, PartitionSpec entries)
  c.sharding = dict(student=((".*", ()),), teacher=((".*", ()),))
  c.distributed = dict(auto=False, coordinator_address="", num_processes=1, process_id=0,
                       cpu_collectives="", timeout=300)
  c.log_every = 10                  # train metrics (and a sync with the devices)
  c.eval_every = 0                  # held-out metrics during training (0: at the end only)
  c.checkpoint_every = 500
  # The teacher: trained on ``terms`` (labels) unless ``load`` names a model to load: an
  # export directory (WORKDIR/teacher/export), a registered pretrained model ("minilm") or a
  # HF safetensors folder.
  # ``init``: a pretrained model or export whose arrays start the teacher's training where
  # paths and shapes match (e.g. "minilm" under a fresh classification head).
  # ``load`` may name several models, comma-separated: an ensemble teacher whose logits combine
  # by ``combine`` ("logits": their mean; "probs": the log of the mean probability); a term
  # reads one member with the option teacher=<index>; the student is built from member 0.
  c.teacher = dict(model=dict(name="mlp"), load="", init="", combine="logits", steps=1000,
                   learning_rate=1e-3,
                   weight_decay=0.0,  # L2 on the gradient before the optimizer (0: none)
                   mixup=0.0, frozen=(), terms=LABELS, **OPTIMIZER)
  # The student trained from scratch on labels with the student's recipe, for comparison.
  # from_init: start it from the student's initialisation (the teacher's parts it reuses, e.g.
  # frozen token embeddings) instead of a fresh one, so that only the terms differ.
  c.baseline = dict(enabled=False, terms=LABELS, from_init=False)
  # The student: model (a model of the teacher's family starts from the teacher's fields),
  # recipe, and its initialisation from the teacher (partition rules + recombination).
  c.student = dict(
      model=dict(name="mlp"), steps=1000, learning_rate=1e-3, weight_decay=0.0, mixup=0.0,
      frozen=(),                    # regexes of parameters that get no updates
      **OPTIMIZER,
      # random|copy|select|average|similarity|width|influence|prune|channels|blockwise
      init=dict(strategy="random",
                rules=(("depth", r"Dense_(\d+)"),),
                num_examples=512,   # training inputs for data-driven strategies (CKA, ...)
                random={}, select=dict(layers=(), every=0), average={},
                copy=dict(groups=()),   # groups copied by name (): all the teacher shares
                similarity=dict(measure="auto", mode="merge"),
                width=dict(layers=(), every=0, importance="weight"),
                influence=dict(measure="cosine", keep=()),
                prune=dict(layers=(), every=0, importance="activation"),
                # ResNets: blocks per stage (layers=(): evenly, keeping each stage's first)
                # and channels ranked by batch-norm |gamma| or activation
                channels=dict(layers=(), importance="weight"),
                # Choose the init among plans before training, without labels: "agreement"
                # scores each plan's student against the teacher on num_examples training
                # inputs. plans=(): every choice of the student's depth among the teacher's
                # layers (select). Plans may change student.model (depth, widths,
                # embedding_rank); budget > 0 skips those over budget parameters (<= 1: that
                # fraction of the teacher's).
                choose=dict(by="", num_examples=1000, plans=(), budget=0.0),
                # Plans scored on held-out data right after initialisation, for the report.
                compare=(),
                # strategy "blockwise" (student.model: "<family>_stitched" with blocks=(spec,
                # ...)): each block trained alone on the teacher's activations, then stitched
                # (docs/blockwise.md).
                blockwise=dict(
                    blocks=(),        # teacher layers of each block; (): even consecutive runs
                    steps=500, learning_rate=1e-3,
                    terms=(("block", 1.0, {"term": "hint"}),),
                    init="teacher",   # block layers from the teacher layer they are shaped
                                      # like (narrower: its leading rows/columns) | "random"
                    cache=False,      # teacher activations: cached once (keyed) | on the fly
                    only=-1,          # >= 0: train only that block (a separate job), then stop
                    dir="",           # the block jobs' directory ("": WORKDIR/blocks)
                    stitch=False,     # a least-squares linear stitch after each block but last
                    # Train, evaluate and export the assembled student as the family's own
                    # model (no stitches, layers it can express): standard exports (HF
                    # layout), an LM's generation. Its features are then named as the family's.
                    plain=False,
                    # Puzzle-style assembly: every variant of every block trained and scored,
                    # then the best combination within `budget` parameters (0: off).
                    variants=(), budget=0)))
  c.distill = dict(
      terms=HINTON,                 # (registered term, weight, options)
      teacher_dtype="float32",      # "bfloat16": the teacher's forward pass in bf16
      cache="",                     # "": online teacher | "full" | "topk": outputs cached once
      cache_topk=5,
      # Stage-wise: the feature terms alone for stage1.steps (phase "features"), then the
      # teacher's parameters under each (teacher, student) prefix of ``head`` copied where
      # shapes fit, then the other terms (phase "student").
      stage1=dict(steps=0, head=()),
      # On-policy distillation (LMs; GKD, Agarwal et al. 2024): on ``fraction`` of the steps
      # the student continues the first ``prompt_length`` tokens of each training sequence by
      # sampling (key/value cache; temperature, top_k, top_p), and the terms score its text.
      on_policy=dict(fraction=0.0, prompt_length=16, temperature=1.0, top_k=0, top_p=1.0))
  c.search = dict(plans=(), steps=500, seeds=(0,), target=0.0, max_plans=10, val_fraction=0.2)
  c.sweep = dict(variants=(), seeds=(0, 1, 2),
                 names=(),          # run only the variants of these names (all when empty)
                columns=())        # more metrics to tabulate per row (e.g. "perplexity")
  # LMs: samples in each evaluation (prompts: strings; none: the held-out text's first tokens)
  c.generate = dict(prompts=(), steps=32, temperature=0.0, top_k=0, top_p=1.0,
                    # Generation quality: `prompts` held-out prompts of 16 tokens each
                    # continued by `steps` sampled tokens (temperature), scored by the teacher
                    # (metric sample_nll; 0 prompts: off)
                    quality=dict(prompts=8, steps=32, temperature=1.0))
  c.export = dict(safetensors=True)  # families with a standard layout also export it
  return c


def plan(name: str, **overrides: Any) -> dict:
  """A plan: ``plan("w32", **{"student.model.hidden": (32, 32)})``."""
  return dict(name=name, **overrides)


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any],
                    what: str = "plan") -> ml_collections.ConfigDict:
  """A copy of ``config`` with each dotted key set (a whole section when the key names one).

  Every key must exist already: a typo is an error naming it, like a command-line override.
  """
  c = copy.deepcopy(config)
  with c.unlocked():
    for dotted, value in overrides.items():
      keys = dotted.split(".")
      node = c
      for i, key in enumerate(keys):
        if not isinstance(node, ml_collections.ConfigDict) or key not in node:
          raise InputError(f"{what}: unknown config key {'.'.join(keys[:i + 1])!r} "
                           f"(in {dotted!r})")
        if i < len(keys) - 1:
          node = node[key]
      node[keys[-1]] = ml_collections.ConfigDict(dict(value)) if isinstance(value, Mapping) \
          else value
  return c


def plan_overrides(p: Mapping[str, Any], what: str) -> dict:
  """The dotted overrides of plan ``p``; its name must be safe as one path component."""
  name = p.get("name", "")
  if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.,=+-]*", name):
    raise InputError(f"{what}: plan name {name!r} must be a non-empty name of letters, digits "
                     "and _.,=+- (it names a directory in the workdir)")
  return {k: v for k, v in p.items() if k != "name"}


def load(path: str, arg: Optional[str] = None) -> ml_collections.ConfigDict:
  """``get_config(arg)`` of the config file at ``path``."""
  if not os.path.isfile(path):
    raise MissingInput(f"config file {path!r} does not exist")
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def sibling(config_file: str, name: str, arg: Optional[str] = None) -> ml_collections.ConfigDict:
  """``get_config(arg)`` of config file ``name`` in the same folder as ``config_file``."""
  return load(os.path.join(os.path.dirname(os.path.abspath(config_file)), name), arg)
