r"""Node inference time: the GLNN MLP student against its GraphSAGE teacher, one process.

  python benchmarks/gnn_inference.py --path=DIR/cora.npz [--workdir=runs/cora_glnn]

GLNN's claim (Zhang et al., 2022): an MLP on node features answers 146-273x faster than a GNN,
because the GNN must first gather each node's multi-hop neighbourhood. Measured here, per
request of B target nodes (B = 1, 16, 256), host work included, float32 on the CPU:

* MLP: read the B targets' feature rows, one jitted forward of the MLP.
* SAGE (2 layers, mean): gather the 2-hop neighbourhood of the targets on the host
  (``graphs.neighbourhood``: CSR reads and renumbering), pad it to the next power of two of
  nodes and edges (so the jitted forward compiles once per size), one forward, read the
  targets' rows. Its outputs are checked against the whole-graph forward (they must be equal).
* Also: both models over the whole graph at once (transductive: every node scored in one pass,
  no gathering), per node.

Weights: the exports of a ``configs/cora.py`` run if ``--workdir`` has them, else random
(the speed does not depend on the values). Requests: ``--requests`` random target sets per B,
the same for both models; rounds alternate the two. Printed: median microseconds per node and
the ratio (SAGE / MLP; above 1: the MLP is faster).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from distill_jax import models  # noqa: E402
from distill_jax.checkpoint import load_export_params  # noqa: E402
from distill_jax.data import graphs  # noqa: E402


def build(conv: str, graph: graphs.Graph, workdir: str, who: str, example: dict):
  model = models.build({"name": "gnn", "conv": conv, "hidden": (128,)},
                       {"num_classes": graph.num_classes})
  export = os.path.join(workdir or "", who, "export")
  if workdir and os.path.isdir(export):
    return model, load_export_params(export, model, example), "trained"
  return model, model.init(jax.random.key(0), example), "random"


def padded(n: int) -> int:
  return 1 << max(n - 1, 1).bit_length()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--path", required=True, help="the graph in the CPF / GLNN .npz layout")
  parser.add_argument("--workdir", default="", help="a configs/cora.py run with exports")
  parser.add_argument("--sizes", default="1,16,256", help="target nodes per request")
  parser.add_argument("--requests", type=int, default=50, help="requests per size and round")
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args()
  config = ml_collections.ConfigDict(dict(
      source="graph_npz", path=args.path, name="", num_classes=0,
      graph=dict(split="per_class", train_per_class=20, val_per_class=30,
                 largest_component=True, normalize="none")))
  graph = graphs.load(config)
  adj = graphs.adjacency(graph)
  whole = {"x": graph.features[None], "senders": graph.senders[None],
           "receivers": graph.receivers[None]}
  sage, sage_params, how = build("sage", graph, args.workdir, "teacher", whole)
  mlp, mlp_params, _ = build("none", graph, args.workdir, "student", whole)
  print(f"graph {graph.name}: {graph.num_nodes} nodes, {len(graph.senders)} directed edges, "
        f"{graph.features.shape[1]} features; weights {how}; {jax.devices()[0].platform}, "
        f"{os.cpu_count()} cores")

  sage_fn = jax.jit(lambda p, x, s, r: sage.apply(p, {"x": x, "senders": s, "receivers": r})[0]
                    ["logits"])
  mlp_fn = jax.jit(lambda p, x: mlp.apply(p, {"x": x, "senders": jnp.zeros((1, 0), jnp.int32),
                                              "receivers": jnp.zeros((1, 0), jnp.int32)})[0]
                   ["logits"])
  full = np.asarray(sage_fn(sage_params, *(whole[k] for k in ("x", "senders", "receivers"))))[0]

  def sage_request(targets: np.ndarray) -> np.ndarray:
    nodes, where, s, r = graphs.neighbourhood(adj, targets, hops=2)
    n, e = padded(len(nodes) + 1), padded(len(s))
    x = np.zeros((1, n, graph.features.shape[1]), np.float32)
    x[0, :len(nodes)] = graph.features[nodes]
    pad = np.full(e - len(s), n - 1, np.int32)     # padding edges loop on a padding node
    out = sage_fn(sage_params, x, np.concatenate([s, pad])[None], np.concatenate([r, pad])[None])
    return np.asarray(out)[0, where]

  def mlp_request(targets: np.ndarray) -> np.ndarray:
    x = np.zeros((1, padded(len(targets)), graph.features.shape[1]), np.float32)
    x[0, :len(targets)] = graph.features[targets]
    return np.asarray(mlp_fn(mlp_params, x))[0, :len(targets)]

  rng = np.random.default_rng(0)
  sizes = [int(b) for b in args.sizes.split(",")]
  rows = []
  for b in sizes:
    requests = [rng.choice(graph.num_nodes, b, replace=False) for _ in range(args.requests)]
    for t in requests:               # compile every padded size, and check exactness
      np.testing.assert_allclose(sage_request(t), full[t], rtol=1e-4, atol=1e-4)
      mlp_request(t)
    times = {"sage": [], "mlp": []}
    for _ in range(args.rounds):
      for name, fn in (("sage", sage_request), ("mlp", mlp_request)):
        start = time.perf_counter()
        for t in requests:
          fn(t)
        times[name].append((time.perf_counter() - start) / (len(requests) * b))
    rows.append((f"request of {b} node(s), gathering included", *(np.median(times[k]) * 1e6
                                                                 for k in ("sage", "mlp"))))
  whole_args = [whole[k] for k in ("x", "senders", "receivers")]
  times = {"sage": [], "mlp": []}
  for _ in range(args.rounds):
    for name, fn in (("sage", lambda: sage_fn(sage_params, *whole_args).block_until_ready()),
                     ("mlp", lambda: mlp_fn(mlp_params, whole["x"]).block_until_ready())):
      fn()
      start = time.perf_counter()
      for _ in range(10):
        fn()
      times[name].append((time.perf_counter() - start) / (10 * graph.num_nodes))
  rows.append(("whole graph in one pass (transductive)", *(np.median(times[k]) * 1e6
                                                          for k in ("sage", "mlp"))))
  print(f"\n| microseconds per node (median of {args.rounds} rounds) | SAGE | MLP | SAGE / MLP |")
  print("|---|---|---|---|")
  for name, s, m in rows:
    print(f"| {name} | {s:,.1f} | {m:,.2f} | **{s / m:.1f}x** |")


if __name__ == "__main__":
  main()
