"""Graphs for node classification: readers for the two common file layouts and the splits.

* ``graph_npz``: the CPF / GLNN ``.npz`` layout (Shchur et al.'s): scipy CSR parts ``adj_*``,
  ``attr_*`` (or a dense ``attr_matrix``) and ``labels``; read with ``allow_pickle=False``.
* ``planetoid``: Planetoid's ``ind.<name>.{x,y,tx,ty,allx,ally,graph,test.index}`` with its
  public split. Those files are Python pickles, and unpickling runs code: they are read only from
  the directory the config names, never fetched.

A :class:`Graph` holds the edges as ``senders``/``receivers`` index arrays, both directions of
each undirected edge, no self-loops, no duplicates: what ``jax.ops.segment_sum`` aggregates over.
"""
import dataclasses
import os
import pickle
from typing import Callable, Mapping

import numpy as np
import scipy.sparse as sp

from distill_jax.data.sources import read_npz_file
from distill_jax.errors import InputError, MissingInput
from distill_jax.registry import Registry

GRAPHS: Registry[Callable] = Registry("graph source")


@dataclasses.dataclass(frozen=True)
class Graph:
  name: str
  features: np.ndarray      # (N, F) float32
  labels: np.ndarray        # (N,) int32
  senders: np.ndarray       # (E,) int32
  receivers: np.ndarray     # (E,) int32
  num_classes: int
  # named splits the file defines: name -> (train, validation, test) node ids
  splits: Mapping[str, tuple] = dataclasses.field(default_factory=dict)

  @property
  def num_nodes(self) -> int:
    return len(self.labels)

  def __post_init__(self):
    n = len(self.labels)
    if self.features.shape[0] != n:
      raise InputError(f"graph {self.name!r}: {self.features.shape[0]} feature rows for {n} "
                       "labelled nodes")
    for what, idx in (("senders", self.senders), ("receivers", self.receivers)):
      if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise InputError(f"graph {self.name!r}: {what} range over [{idx.min()}, {idx.max()}], "
                         f"outside the {n} nodes")


def undirected_edges(rows: np.ndarray, cols: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
  """Both directions of every edge, self-loops and duplicates dropped, sorted by receiver."""
  a = sp.coo_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, n)).tocsr()
  a = ((a + a.T) > 0).astype(np.float32).tolil()
  a.setdiag(0)
  a = a.tocsr()
  a.eliminate_zeros()
  coo = a.tocoo()       # row = receiver, column = sender: CSR rows are each node's neighbours
  return coo.col.astype(np.int32), coo.row.astype(np.int32)


def adjacency(graph: Graph) -> sp.csr_matrix:
  """The graph's (N, N) adjacency, row i listing the neighbours that send to node i."""
  n = graph.num_nodes
  return sp.csr_matrix((np.ones(len(graph.senders), np.float32),
                        (graph.receivers, graph.senders)), shape=(n, n))


def subgraph(graph: Graph, nodes: np.ndarray) -> Graph:
  """The graph induced on ``nodes`` (sorted), renumbered 0..len-1 (named splits dropped)."""
  nodes = np.sort(nodes)
  new = np.full(graph.num_nodes, -1, np.int64)
  new[nodes] = np.arange(len(nodes))
  keep = (new[graph.senders] >= 0) & (new[graph.receivers] >= 0)
  return Graph(graph.name, graph.features[nodes], graph.labels[nodes],
               new[graph.senders[keep]].astype(np.int32),
               new[graph.receivers[keep]].astype(np.int32), graph.num_classes)


def neighbourhood(adj: sp.csr_matrix, targets: np.ndarray, hops: int) -> tuple[np.ndarray, ...]:
  """What an L-layer GNN needs to score ``targets``: the nodes within ``hops`` of them (sorted,
  with the targets' positions among them) and the edges between those nodes as (senders,
  receivers) renumbered to their positions. ``adj``: :func:`adjacency`. What inductive GNN
  inference must gather per request: with ``hops`` = the layers of a mean-SAGE (one more for
  GCN, whose edge weights read the senders' degrees), the GNN's outputs at the targets on this
  subgraph equal its outputs on the whole graph (nodes nearer than ``hops`` keep all their
  neighbours)."""
  nodes = frontier = np.unique(targets)
  for _ in range(hops):
    frontier = np.setdiff1d(adj[frontier].indices, nodes)
    nodes = np.union1d(nodes, frontier)
  sub = adj[nodes][:, nodes].tocoo()
  return nodes, np.searchsorted(nodes, targets), sub.col.astype(np.int32), sub.row.astype(np.int32)


def largest_component(graph: Graph) -> Graph:
  """The largest connected component (as GLNN and CPF evaluate Cora: 2,485 of 2,708 nodes)."""
  count, label = sp.csgraph.connected_components(adjacency(graph), directed=False)
  if count == 1:
    return graph
  return subgraph(graph, np.flatnonzero(label == np.bincount(label).argmax()))


def normalize_rows(features: np.ndarray) -> np.ndarray:
  """Each node's features divided by their sum (Kipf & Welling's and CPF's preprocessing)."""
  total = features.sum(1, keepdims=True)
  return (features / np.where(total == 0, 1, total)).astype(np.float32)


def per_class_split(labels: np.ndarray, train_per_class: int, val_per_class: int,
                    seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """GLNN's / CPF's split: per class, ``train_per_class`` random training nodes and
  ``val_per_class`` validation nodes; every other node is a test node. Seeded; sorted ids."""
  rng = np.random.default_rng(seed)
  train, val = [], []
  for c in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == c))
    if len(members) < train_per_class + val_per_class:
      raise InputError(f"class {c} has {len(members)} nodes; the split needs "
                       f"{train_per_class} train + {val_per_class} validation nodes per class")
    train.append(members[:train_per_class])
    val.append(members[train_per_class:train_per_class + val_per_class])
  train, val = np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
  test = np.setdiff1d(np.arange(len(labels)), np.concatenate([train, val]))
  return train, val, test


def split(graph: Graph, graph_config, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The (train, validation, test) node ids that ``data.graph.split`` names."""
  name = graph_config.split
  if name == "per_class":
    return per_class_split(graph.labels, graph_config.train_per_class,
                           graph_config.val_per_class, seed)
  if name in graph.splits:
    return graph.splits[name]
  raise InputError(f"data.graph.split={name!r}: graph {graph.name!r} has the splits "
                   f"{['per_class', *graph.splits]}")


def _csr(f, prefix: str, path: str) -> sp.csr_matrix:
  keys = [f"{prefix}_{k}" for k in ("data", "indices", "indptr", "shape")]
  missing = [k for k in keys if k not in f.files]
  if missing:
    raise InputError(f"graph npz {path!r} lacks {missing} (the CSR parts of {prefix!r}); it "
                     f"has {sorted(f.files)}")
  return sp.csr_matrix(tuple(f[k] for k in keys[:3]), shape=tuple(f[keys[3]]))


@GRAPHS.register("graph_npz")
def read_npz(data_config) -> Graph:
  """The CPF / GLNN layout, as shipped for Cora, Citeseer, Amazon and Coauthor graphs."""
  path = data_config.path

  def read(f):
    adj = _csr(f, "adj", path)
    attr = (f["attr_matrix"] if "attr_matrix" in f.files else _csr(f, "attr", path).toarray())
    if "labels" not in f.files:
      raise InputError(f"graph npz {path!r} has no 'labels' array; it has {sorted(f.files)}")
    return adj, attr, f["labels"]
  adj, attr, labels = read_npz_file(path, "graph npz file", read)
  if labels.ndim != 1 or len(labels) != adj.shape[0] or attr.shape[0] != adj.shape[0]:
    raise InputError(f"graph npz {path!r}: adjacency {adj.shape}, attributes {attr.shape} and "
                     f"labels {labels.shape} disagree on the number of nodes")
  coo = adj.tocoo()
  senders, receivers = undirected_edges(coo.row, coo.col, adj.shape[0])
  name = os.path.splitext(os.path.basename(path))[0]
  return Graph(name, np.asarray(attr, np.float32), labels.astype(np.int32), senders, receivers,
               int(data_config.num_classes or labels.max() + 1))


@GRAPHS.register("planetoid")
def read_planetoid(data_config) -> Graph:
  """Planetoid's files ``<data.path>/ind.<data.name>.*`` read as Kipf & Welling's loader reads
  them (row i of ``tx``/``ty`` is the node ``test.index`` lists i-th): the training nodes are the
  first ``len(y)``, validation the next 500, test the ids in ``test.index`` (split
  ``public``). Citeseer's isolated test nodes get zero features and no label."""
  directory, name = data_config.path, data_config.name
  if not name:
    raise InputError("data.source='planetoid' needs data.name (e.g. 'cora')")
  parts = {}
  for part in ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index"):
    file = os.path.join(directory, f"ind.{name}.{part}")
    if not os.path.isfile(file):
      raise MissingInput(f"planetoid file {file!r} does not exist (data.path is the folder "
                         f"holding ind.{name}.*)")
    try:
      if part == "test.index":
        parts[part] = np.loadtxt(file, dtype=np.int64, ndmin=1)
      else:
        with open(file, "rb") as f:      # a pickle: only files the user named and trusts
          parts[part] = pickle.load(f, encoding="latin1")
    except Exception as e:
      raise InputError(f"planetoid file {file!r} cannot be read ({type(e).__name__}: {e})") \
          from None
  x, y, tx, ty, allx, ally = (parts[k] for k in ("x", "y", "tx", "ty", "allx", "ally"))
  test_index = parts["test.index"]
  tx, ty = sp.csr_matrix(tx).toarray(), np.asarray(ty)
  full = np.arange(test_index.min(), test_index.max() + 1)
  if len(full) != len(tx):      # isolated test nodes missing from tx/ty (Citeseer)
    tx_full = np.zeros((len(full), tx.shape[1]), np.float32)
    ty_full = np.zeros((len(full), ty.shape[1]), ty.dtype)
    tx_full[np.sort(test_index) - full[0]] = tx
    ty_full[np.sort(test_index) - full[0]] = ty
    tx, ty = tx_full, ty_full
  features = np.vstack([sp.csr_matrix(allx).toarray(), tx]).astype(np.float32)
  onehot = np.vstack([np.asarray(ally), ty])
  order = np.sort(test_index)
  features[test_index] = features[order]      # test rows come in sorted order: put them back
  onehot[test_index] = onehot[order]
  labels = onehot.argmax(1).astype(np.int32)
  n = len(labels)
  rows, cols = [], []
  for node, neighbours in parts["graph"].items():
    rows.extend([node] * len(neighbours))
    cols.extend(neighbours)
  senders, receivers = undirected_edges(np.asarray(rows), np.asarray(cols), n)
  test = np.sort(test_index)
  train = np.arange(len(y))
  val = np.setdiff1d(np.arange(len(y), min(len(y) + 500, n)), test)   # disjoint on real files
  return Graph(name, features, labels, senders, receivers, onehot.shape[1],
               splits={"public": (train, val, test)})


def load(data_config) -> Graph:
  """The graph ``data.source`` names, preprocessed as ``data.graph`` says."""
  graph = GRAPHS.get(data_config.source)(data_config)
  g = data_config.graph
  if g.largest_component:
    if graph.splits and g.split in graph.splits:
      raise InputError(f"data.graph.largest_component=True would renumber the nodes of the "
                       f"{g.split!r} split; use it with split='per_class'")
    graph = largest_component(graph)
  if g.normalize == "row":
    graph = dataclasses.replace(graph, features=normalize_rows(graph.features))
  elif g.normalize != "none":
    raise InputError(f"data.graph.normalize={g.normalize!r}: use 'row' or 'none'")
  return graph
