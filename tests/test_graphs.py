"""Graphs: readers and splits, message passing against hand-computed values, the masked label
loss, width selection of GraphSAGE layers, and the node-classification job end to end on a
graph the test makes (two noisy communities)."""
import os
import pickle

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.sparse as sp

from distill_jax import losses, recombine
from distill_jax.config import load
from distill_jax.data import graphs
from distill_jax.errors import InputError, MissingInput
from distill_jax.main import run_job
from distill_jax.models.gnn import GNN, gcn_propagate, mean_neighbours

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "cora.py")

# A path 0 - 1 - 2 and an isolated node 3, both directions of each edge.
SENDERS = jnp.array([0, 1, 1, 2])
RECEIVERS = jnp.array([1, 0, 2, 1])


def test_gcn_propagation_is_the_degree_normalised_sum_by_hand():
  h = jnp.array([[1.0], [2.0], [4.0], [8.0]])
  out = gcn_propagate(h, SENDERS, RECEIVERS, 4)
  # degrees with the self-loop: 2, 3, 2, 1; out_v = sum_{u in N(v) + v} h_u / sqrt(d_u d_v)
  expected = [1 / 2 + 2 / np.sqrt(6), 1 / np.sqrt(6) + 2 / 3 + 4 / np.sqrt(6),
              2 / np.sqrt(6) + 4 / 2, 8.0]
  np.testing.assert_allclose(np.asarray(out)[:, 0], expected, rtol=1e-6)


def test_mean_aggregation_by_hand_and_sage_layer_formula():
  h = jnp.array([[1.0, 0.0], [2.0, 1.0], [4.0, 3.0], [8.0, 5.0]])
  np.testing.assert_allclose(mean_neighbours(h, SENDERS, RECEIVERS, 4),
                             [[2, 1], [2.5, 1.5], [2, 1], [0, 0]])
  model = GNN(num_classes=3, conv="sage", hidden=())
  x, s, r = h[None], SENDERS[None], RECEIVERS[None]
  params = model.init(jax.random.key(0), x, s, r)["params"]["layer_0"]
  out = model.apply({"params": {"layer_0": params}}, x, s, r)[0]
  mean = np.array([[2, 1], [2.5, 1.5], [2, 1], [0, 0]])
  expected = (np.asarray(h) @ params["self"]["kernel"] + params["self"]["bias"]
              + mean @ params["neighbour"]["kernel"])
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("conv", ["gcn", "sage", "none"])
def test_a_batch_of_graphs_is_their_disjoint_union(conv):
  """Two graphs in one batch give what each gives alone (edges stay within their graph)."""
  model = GNN(num_classes=2, conv=conv, hidden=(5,))
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 4, 3)), jnp.float32)
  s = jnp.stack([SENDERS, jnp.array([3, 2, 0, 3])])
  r = jnp.stack([RECEIVERS, jnp.array([2, 3, 3, 0])])
  params = model.init(jax.random.key(0), x, s, r)["params"]
  both = model.apply({"params": params}, x, s, r)
  for g in range(2):
    alone = model.apply({"params": params}, x[g:g + 1], s[g:g + 1], r[g:g + 1])
    np.testing.assert_allclose(both[g], alone[0], rtol=1e-5, atol=1e-6)
  if conv == "none":   # the MLP reads no edges
    np.testing.assert_allclose(model.apply({"params": params}, x, s[:, :0], r[:, :0]), both)


def test_cross_entropy_skips_unlabelled_nodes_and_the_glnn_loss_by_hand():
  logits = jnp.array([[[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
  labels = jnp.array([[0, -1, 1]])
  # nodes 0 and 2 only: -log softmax([2, 0])[0], -log softmax([1, 1])[1]
  ce = (np.log(1 + np.exp(-2.0)) + np.log(2.0)) / 2
  np.testing.assert_allclose(losses.cross_entropy(logits, labels), ce, rtol=1e-6)
  # KD (T = 1) over every node, teacher node 1 at [0, 0] (uniform), the others equal
  teacher = jnp.array([[[2.0, 0.0], [0.0, 0.0], [1.0, 1.0]]])
  q = 1 / (1 + np.exp(-1.0))       # the student's node-1 probability of class 1
  kl_node1 = 0.5 * np.log(0.5 / (1 - q)) + 0.5 * np.log(0.5 / q)
  kd = losses.kd({"logits": logits}, {"logits": teacher}, {}, temperature=1.0)
  np.testing.assert_allclose(kd, kl_node1 / 3, rtol=1e-5)


def _communities(n_per=30, features=12, seed=0):
  """Two communities, dense inside and sparse between, features that hint at the community."""
  rng = np.random.default_rng(seed)
  n = 2 * n_per
  labels = np.repeat([0, 1], n_per)
  same = labels[:, None] == labels[None, :]
  adj = np.triu(rng.random((n, n)) < np.where(same, 0.2, 0.01), 1)
  x = (rng.random((n, features)) < np.where(labels[:, None] == (np.arange(features) % 2), 0.4,
                                            0.2)).astype(np.float32)
  return sp.csr_matrix(adj.astype(np.float32)), sp.csr_matrix(x), labels


def write_npz(path, adj, attr, labels):
  np.savez(path, adj_data=adj.data, adj_indices=adj.indices, adj_indptr=adj.indptr,
           adj_shape=adj.shape, attr_data=attr.data, attr_indices=attr.indices,
           attr_indptr=attr.indptr, attr_shape=attr.shape, labels=labels)


def data_config(**kw):
  g = ml_collections.ConfigDict(dict(split="per_class", train_per_class=3, val_per_class=5,
                                     largest_component=False, normalize="none"))
  g.update(kw.pop("graph", {}))
  return ml_collections.ConfigDict(dict(dict(source="graph_npz", path="", name="",
                                             num_classes=0, graph=g), **kw))


def test_npz_reader_symmetrises_and_splits_are_seeded_and_disjoint(tmp_path):
  adj = sp.csr_matrix(([1.0, 1.0, 1.0, 1.0], ([0, 1, 2, 2], [1, 0, 2, 3])), shape=(5, 5))
  attr = sp.csr_matrix(np.eye(5, dtype=np.float32))
  write_npz(tmp_path / "g.npz", adj, attr, np.array([0, 1, 0, 1, 1]))
  g = graphs.load(data_config(path=str(tmp_path / "g.npz")))
  # 0-1 given both ways (one edge), the self-loop 2-2 dropped, 2-3 made two-way; 4 isolated
  assert sorted(zip(g.senders.tolist(), g.receivers.tolist())) == [(0, 1), (1, 0), (2, 3),
                                                                   (3, 2)]
  assert graphs.largest_component(g).num_nodes == 2
  _, _, labels = _communities()
  a = graphs.per_class_split(labels, 3, 5, seed=7)
  b = graphs.per_class_split(labels, 3, 5, seed=7)
  c = graphs.per_class_split(labels, 3, 5, seed=8)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[0], c[0])
  train, val, test = a
  assert np.bincount(labels[train]).tolist() == [3, 3] and np.bincount(labels[val]).tolist() \
      == [5, 5]
  assert len(np.union1d(np.union1d(train, val), test)) == len(labels) == len(train) + \
      len(val) + len(test)


def test_graph_errors_name_the_key_and_the_file(tmp_path):
  np.savez(tmp_path / "bad.npz", labels=np.zeros(3, np.int64))
  with pytest.raises(InputError, match=r"adj_data.*CSR parts of 'adj'"):
    graphs.load(data_config(path=str(tmp_path / "bad.npz")))
  with pytest.raises(MissingInput, match="nowhere.npz"):
    graphs.load(data_config(path=str(tmp_path / "nowhere.npz")))
  with pytest.raises(MissingInput, match=r"ind\.cora\.x"):
    graphs.load(data_config(source="planetoid", path=str(tmp_path), name="cora"))
  with pytest.raises(InputError, match="class 0 has 2 nodes"):
    graphs.per_class_split(np.array([0, 0, 1, 1, 1]), 2, 1, 0)


def write_planetoid(directory, name="toy"):
  """Planetoid's files for a 6-node graph: 2 training nodes, test ids 4 and 5 stored in the
  test files in reverse order of ``test.index`` (as the real files may be)."""
  x = np.eye(6, dtype=np.float32)
  onehot = np.eye(2)[[0, 1, 0, 1, 0, 1]]
  objects = {"x": sp.csr_matrix(x[:2]), "y": onehot[:2], "allx": sp.csr_matrix(x[:4]),
             "ally": onehot[:4], "tx": sp.csr_matrix(x[[4, 5]]), "ty": onehot[[4, 5]],
             "graph": {0: [1], 1: [0, 2], 2: [1, 3], 3: [2], 4: [5], 5: [4]}}
  for part, obj in objects.items():
    with open(os.path.join(directory, f"ind.{name}.{part}"), "wb") as f:
      pickle.dump(obj, f)
  with open(os.path.join(directory, f"ind.{name}.test.index"), "w") as f:
    f.write("5\n4\n")


def test_planetoid_reader_reorders_test_rows_and_gives_the_public_split(tmp_path):
  write_planetoid(tmp_path)
  config = data_config(source="planetoid", path=str(tmp_path), name="toy",
                       graph=dict(split="public"))
  g = graphs.load(config)
  # tx's row i is the node test.index lists i-th (Kipf & Welling's loader): row 0 (e4, class
  # 0) is node 5, row 1 (e5, class 1) node 4
  assert g.labels.tolist() == [0, 1, 0, 1, 1, 0]
  np.testing.assert_array_equal(g.features[4], np.eye(6)[5])
  train, val, test = graphs.split(g, config.graph, 0)
  assert train.tolist() == [0, 1] and test.tolist() == [4, 5] and val.tolist() == [2, 3]
  assert len(g.senders) == 8


def _smoke_config(tmp_path, arg="smoke"):
  adj, attr, labels = _communities()
  write_npz(tmp_path / "two.npz", adj, attr, labels)
  config = load(CONFIG, arg)
  with config.unlocked():
    config.data.path = str(tmp_path / "two.npz")
    config.data.graph.update(train_per_class=3, val_per_class=5, largest_component=False)
    config.teacher.steps, config.student.steps = 60, 60
  return config


def test_glnn_job_end_to_end_on_a_made_graph(tmp_path):
  config = _smoke_config(tmp_path)
  summary = run_job(config, str(tmp_path / "job"))
  # SAGE 12 -> 128 -> 2: (12 * 128 * 2 + 128) + (128 * 2 * 2 + 2); the MLP half of it
  assert summary["teacher"]["params"] == (12 * 128 * 2 + 128) + (128 * 2 * 2 + 2)
  assert summary["student"]["params"] == (12 * 128 + 128) + (128 * 2 + 2)
  for row in ("teacher", "student", "baseline"):
    assert {"accuracy", "val_accuracy"} <= set(summary[row])
  assert summary["teacher"]["accuracy"] > 0.8          # two communities the graph separates
  assert 0.0 <= summary["student"]["agreement"] <= 1.0


def test_half_width_sage_keeps_the_teachers_strongest_units():
  """Width selection slices both kernels of a SAGE layer (self, neighbour) by the units' joint
  norm, and the next layer's input rows to match."""
  x, s, r = jnp.ones((1, 4, 6)), SENDERS[None], RECEIVERS[None]
  teacher = GNN(num_classes=3, conv="sage", hidden=(8,)).init(jax.random.key(0), x, s, r)
  student = GNN(num_classes=3, conv="sage", hidden=(4,)).init(jax.random.key(1), x, s, r)
  params, _ = recombine.recombine(teacher["params"], student["params"], strategy="width",
                                  rules=(("depth", r"layer_(\d+)"),))
  t0, s0 = teacher["params"]["layer_0"], params["layer_0"]
  norms = np.sqrt((np.asarray(t0["self"]["kernel"]) ** 2).sum(0)
                  + (np.asarray(t0["neighbour"]["kernel"]) ** 2).sum(0)
                  + np.asarray(t0["self"]["bias"]) ** 2)
  units = np.sort(np.argsort(-norms, kind="stable")[:4])
  for part in ("self", "neighbour"):
    np.testing.assert_array_equal(s0[part]["kernel"], np.asarray(t0[part]["kernel"])[:, units])
    np.testing.assert_array_equal(params["layer_1"][part]["kernel"], np.asarray(
        teacher["params"]["layer_1"][part]["kernel"])[units])
  np.testing.assert_array_equal(s0["self"]["bias"], np.asarray(t0["self"]["bias"])[units])


def test_node_classification_wants_the_whole_graph_per_batch(tmp_path):
  config = _smoke_config(tmp_path)
  with config.unlocked():
    config.batch_size = 2
  with pytest.raises(InputError, match="batch_size=2"):
    run_job(config, str(tmp_path / "job"))


def test_a_targets_neighbourhood_gives_the_whole_graphs_outputs_there():
  """Inductive inference: a 2-layer GNN on the 2-hop neighbourhood of some nodes scores them
  exactly as on the whole graph."""
  adj_matrix, attr, labels = _communities(n_per=20)
  senders, receivers = graphs.undirected_edges(*adj_matrix.nonzero(), 40)
  g = graphs.Graph("two", attr.toarray(), labels.astype(np.int32), senders, receivers, 2)
  targets = np.array([3, 17, 25])
  # GCN's weights read the senders' degrees too: one hop more than its layers
  for conv, hops in (("sage", 2), ("gcn", 3)):
    nodes, where, s, r = graphs.neighbourhood(graphs.adjacency(g), targets, hops)
    assert len(nodes) < 40
    model = GNN(num_classes=2, conv=conv, hidden=(8,))
    params = model.init(jax.random.key(0), g.features[None], senders[None], receivers[None])
    full = model.apply(params, g.features[None], senders[None], receivers[None])[0]
    part = model.apply(params, g.features[nodes][None], s[None], r[None])[0]
    np.testing.assert_allclose(part[where], full[targets], rtol=1e-5, atol=1e-5, err_msg=conv)


def test_a_search_validates_on_the_splits_validation_nodes(tmp_path):
  from distill_jax.tasks import TASKS
  config = _smoke_config(tmp_path)
  task = TASKS.get("node_classification")
  data = task.load(config)
  val = task.validation(data, 0.2, 0)
  np.testing.assert_array_equal(val.eval["test"], data.eval["val"])
  assert len(data.eval["val"]) == 10 and (data.train["y"] >= 0).sum() == 6
