r"""Distil a 10-layer MLP into a 3-layer MLP on scikit-learn's digits (real data, no download).

  python -m distill_jax.main --config=configs/digits_mlp10_to3.py --workdir=/tmp/digits

Teacher: 64-256x9-10 (10 Dense layers, dropout 0.1). Student: 64-256x2-10 (3 Dense layers),
initialised from teacher layers 0, 5 and the head, then trained on soft targets (T=4) and
labels of mixed-up inputs. The from-scratch baseline trains the same student recipe (dropout,
mixup, steps, learning rate) on labels only.
``--config=configs/digits_mlp10_to3.py:smoke`` gives a seconds-long run for tests.
"""
import ml_collections


def get_config(arg=None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = dict(source="digits",    # digits | npz | tfds
                name="",            # TFDS dataset name, e.g. "mnist"
                path="",            # .npz file with x (N, ...) and y (N,)
                data_dir="",        # TFDS data_dir
                download=False,     # allow TFDS to download (needs network)
                test_fraction=0.2,  # digits/npz: seeded held-out fraction
                split_seed=0,
                num_classes=0)      # npz: 0 = max label + 1
  c.batch_size = 64
  c.micro_batches = 1               # gradient accumulation: split each batch into k parts
  # Device mesh {axis: size} (-1: all remaining devices); batches split over data (and fsdp).
  c.mesh = dict(data=-1)
  # (regex over "/"-joined paths of the train state / teacher params, PartitionSpec entries);
  # first match wins. FSDP example: ((r".*kernel", (None, "fsdp")), (".*", ())) with
  # --config.mesh='{"data": 2, "fsdp": 4}'.
  c.sharding = dict(student=((".*", ()),), teacher=((".*", ()),))
  # Multi-host: auto=True on TPU pods / SLURM / Open MPI, or an explicit coordinator.
  c.distributed = dict(auto=False, coordinator_address="", num_processes=1, process_id=0,
                       cpu_collectives="", timeout=300)
  c.eval_batch_size = 512
  c.log_every = 10
  c.eval_every = 250                # held-out loss/accuracy/agreement (metrics.jsonl, TensorBoard)
  c.checkpoint_every = 500
  c.baseline = True                 # also train the student architecture from scratch

  c.teacher = dict(model=dict(name="mlp", hidden=(256,) * 9, dropout=0.1),
                   steps=3000, learning_rate=1e-3, mixup=0.0,
                   checkpoint="")   # an Orbax checkpoint dir to restore instead of training
  c.student = dict(model=dict(name="mlp", hidden=(256,) * 2, dropout=0.1),
                   steps=2000, learning_rate=1e-3,
                   mixup=1.0,       # Beta(1, 1) mixup: KD on points between the examples
                   init=dict(strategy="select",   # random | select | average | similarity | width
                             rules=(("depth", r"Dense_(\d+)"),),   # one group per layer
                             num_examples=512,    # inputs for CKA / activation importance
                             select=dict(layers=(0, 5, 9), every=0),
                             average=dict(),
                             similarity=dict(measure="auto", mode="merge"),
                             width=dict(layers=(), every=0, importance="weight")))
  c.distill = dict(temperature=4.0, alpha=0.9,
                   logit_loss="kd",          # kd (Hinton, weight alpha) | dkd (+ label CE)
                   dkd=dict(alpha=1.0, beta=8.0),
                   teacher_dtype="float32",  # or "bfloat16": teacher forward in bf16
                   cache="",                 # "" online teacher | "logits" | "topk" (no mixup)
                   cache_topk=5,
                   # Feature-level KD: (teacher path, student path) regexes over captured
                   # intermediates, and (FEATURE_LOSSES name, weight) pairs; see features.py.
                   features=dict(pairs=(), losses=(("hint", 1.0),),
                                 stagewise=False,  # True: features alone first, then outputs
                                 stage1_steps=0,
                                 head=()))         # stage-wise: (teacher, student) head prefixes

  if arg == "smoke":
    c.teacher.steps, c.student.steps = 60, 40
    c.checkpoint_every = 20
  return c
