r"""Graph neural networks on Cora: GNN teachers distilled into an MLP (GLNN) or a narrower GNN.

  python -m distill_jax.main --config=configs/cora.py --config.data.path=DIR/cora.npz \
      --workdir=runs/cora_glnn
  python -m distill_jax.sweep --config=configs/cora.py:sweep \
      --config.data.path=DIR/cora.npz --workdir=runs/cora_sweep
  python -m distill_jax.main --config=configs/cora.py:gcn \
      --config.data.path=DIR/planetoid --workdir=runs/cora_gcn

Arguments (comma separated):
* ``glnn`` (default): GLNN's transductive Cora setting (Zhang et al., ICLR 2022). The graph in
  the CPF / GLNN ``.npz`` layout, its largest connected component (2,485 nodes), 20 training
  and 30 validation nodes per class (split seed 0; the seed varies the models only), the rest
  test. Teacher: GraphSAGE (mean), 2 layers, hidden 128, dropout 0.3, Adam 0.01 with L2 5e-4.
  Student: an MLP on node features (``gnn`` with ``conv="none"``), 2 layers, hidden 128,
  dropout 0.6, L2 5e-3 (GLNN's Cora settings), trained on the teacher's soft labels on every
  node (KD at T = 1, weight 1 - lambda) and the labels of the training nodes (weight lambda).
  The baseline: the same MLP on the labels alone.
* ``half``: the same split and teacher; the student is GraphSAGE at half the width (64),
  initialised by keeping the teacher's 64 most important hidden units of each layer (width
  selection by weight norm), then distilled the same way. Baseline: that student from labels.
* ``gcn``: Planetoid's public split (140 / 500 / 1,000 nodes; ``data.path`` is the folder with
  ``ind.cora.*``). Teacher: GCN as Kipf & Welling train it (hidden 16, dropout 0.5 on the
  features and the hidden layer, Adam 0.01, L2 5e-4, 200 steps). Student: GCN at half width
  (hidden 8) by width selection, distilled; baseline: that student from labels.
* ``hint``: adds a feature term on the hidden node embeddings (the layer-0 outputs, projected).
* ``lambda=L``: the label weight (default 0: GLNN's transductive Cora runs use soft labels
  alone; the labels already shape the teacher).
* ``sweep``: ``sweep.variants`` = glnn, half and glnn with the hint, seeds 0-9 (GLNN's 10).
* ``smoke``: a few steps, for tests.

Full-batch: one training row is the whole graph (batch_size 1); a step is an epoch.
"""
import ml_collections

from distill_jax.config import defaults, plan


def model(conv: str, hidden: int, dropout: float, input_dropout: float = 0.0):
  return ml_collections.ConfigDict(dict(name="gnn", conv=conv, hidden=(hidden,),
                                        dropout=dropout, input_dropout=input_dropout))


def get_config(arg=None) -> ml_collections.ConfigDict:
  args = [a for a in (arg or "").split(",") if a]
  options = dict(a.split("=", 1) for a in args if "=" in a)
  flags = {a for a in args if "=" not in a}
  unknown = ((flags - {"glnn", "half", "gcn", "hint", "sweep", "smoke"})
             | (set(options) - {"lambda"}))
  if unknown:
    raise ValueError(f"configs/cora.py: unknown argument(s) {sorted(unknown)}")
  experiment = "gcn" if "gcn" in flags else "half" if "half" in flags else "glnn"
  lam = float(options.get("lambda", 0.0))

  c = defaults()
  c.task = "node_classification"
  c.batch_size, c.eval_batch_size = 1, 1
  c.log_every, c.checkpoint_every = 50, 1000
  c.baseline.enabled = True
  c.teacher.learning_rate, c.student.learning_rate = 0.01, 0.01
  c.student.init.rules = (("depth", r"layer_(\d+)"),)
  if experiment == "gcn":
    c.data.source, c.data.path, c.data.name = "planetoid", "data/planetoid", "cora"
    c.data.graph.split, c.data.graph.largest_component = "public", False
    c.teacher.model = model("gcn", 16, 0.5, input_dropout=0.5)
    c.teacher.steps, c.teacher.weight_decay = 200, 5e-4
    c.student.model = model("gcn", 8, 0.5, input_dropout=0.5)
    c.student.steps, c.student.weight_decay = 200, 5e-4
    c.student.init.strategy = "width"
  else:
    c.data.source, c.data.path = "graph_npz", "data/cora.npz"
    c.data.graph.split, c.data.graph.largest_component = "per_class", True
    c.data.graph.normalize = "none"    # GLNN reads the binary bag-of-words as they are
    c.teacher.model = model("sage", 128, 0.3)
    c.teacher.steps, c.teacher.weight_decay = 200, 5e-4
    if experiment == "half":
      c.student.model = model("sage", 64, 0.3)
      c.student.steps, c.student.weight_decay = 300, 5e-4
      c.student.init.strategy = "width"
    else:
      c.student.model = model("none", 128, 0.6)
      c.student.steps, c.student.weight_decay = 300, 5e-3
      c.student.init.strategy = "random"
  c.distill.terms = (("kd", 1.0 - lam, {"temperature": 1.0}),) + (
      (("ce", lam, {}),) if lam else ())
  if "hint" in flags:
    c.distill.terms += (("hint", 0.1, {"pairs": (("layer_0", "layer_0"),)}),)
  if "sweep" in flags:
    c.sweep.seeds = tuple(range(10))
    c.sweep.variants = (plan("glnn"),
                        plan("half", **{"student.model": model("sage", 64, 0.3),
                                        "student.weight_decay": 5e-4,
                                        "student.init.strategy": "width"}),
                        plan("glnn_hint", **{"distill.terms": c.distill.terms + (
                            ("hint", 0.1, {"pairs": (("layer_0", "layer_0"),)}),)}))
  if "smoke" in flags:
    c.teacher.steps, c.student.steps = 20, 10
    c.log_every, c.checkpoint_every = 5, 10
  return c
