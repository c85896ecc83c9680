"""Node classification on one graph (transductive, full batch): GCN / GraphSAGE teachers, MLP or
smaller GNN students (GLNN). Training data is one row, the whole graph, whose labels are -1 off
the training nodes (the label terms skip them; the teacher terms see every node). Held out:
accuracy on the split's test nodes, and on its validation nodes.
"""
import dataclasses
from typing import Any

import jax
import numpy as np

from distill_jax import inference
from distill_jax.data import graphs
from distill_jax.errors import InputError
from distill_jax.paths import fingerprint
from distill_jax.tasks import TASKS, Task, TaskData
from distill_jax.tasks.classification import label_metrics, top1_agreement

INPUTS = ("x", "senders", "receivers")


def graph_row(graph: graphs.Graph, labelled: np.ndarray) -> dict:
  """The graph as one batch row: features, edges, and labels only at ``labelled`` nodes."""
  y = np.full(graph.num_nodes, -1, np.int32)
  y[labelled] = graph.labels[labelled]
  return {"x": graph.features[None], "senders": graph.senders[None],
          "receivers": graph.receivers[None], "y": y[None]}


def task_data(graph: graphs.Graph, train_ids, val_ids, test_ids, identity: dict) -> TaskData:
  for a, b, names in ((train_ids, val_ids, "train/validation"), (train_ids, test_ids,
                      "train/test"), (val_ids, test_ids, "validation/test")):
    if np.intersect1d(a, b).size:
      raise InputError(f"graph {graph.name!r}: the {names} node sets overlap")
  row = graph_row(graph, train_ids)
  held_out = {"graph": {k: row[k] for k in INPUTS}, "labels": graph.labels,
              "test": np.asarray(test_ids), "val": np.asarray(val_ids)}
  sha = fingerprint([graph.features, graph.senders, graph.receivers, graph.labels,
                     np.asarray(train_ids), np.asarray(val_ids), np.asarray(test_ids)])
  return TaskData(graph.name, row, held_out, {"num_classes": graph.num_classes},
                  dict(identity, sha256=sha), example=row)


def logits_of(model, params: Any, data: TaskData, mesh) -> np.ndarray:
  """(N, classes): one full-graph forward pass."""
  return inference.predict(model, params, data.eval["graph"], mesh, batch_size=1)["logits"][0]


class NodeClassification(Task):
  metric = "accuracy"

  def load(self, config) -> TaskData:
    d = config.data
    graph = graphs.load(d)
    train_ids, val_ids, test_ids = graphs.split(graph, d.graph, d.split_seed)
    return task_data(graph, train_ids, val_ids, test_ids,
                     {"source": d.source, "path": d.path, "name": d.name,
                      "split": d.graph.split, "split_seed": d.split_seed,
                      "largest_component": d.graph.largest_component,
                      "normalize": d.graph.normalize})

  def check(self, config, data: TaskData) -> None:
    if config.batch_size != 1:
      raise InputError(f"batch_size={config.batch_size}: node classification trains on the "
                       "whole graph, one row; set --config.batch_size=1")
    ways = config.mesh.get("data", 1)
    if ways != 1 and (ways > 1 or jax.device_count() > 1):
      raise InputError(f"mesh={dict(config.mesh)}: the one graph cannot be split over the "
                       f"{jax.device_count()} devices' data axis; replicate it with "
                       """--config.mesh='{"data": 1, "model": -1}'""")

  def reference(self, model, params, data, mesh, config) -> np.ndarray:
    return logits_of(model, params, data, mesh)

  def evaluate(self, model, params, data, mesh, config, reference=None) -> dict:
    logits, labels, test = logits_of(model, params, data, mesh), data.eval["labels"], \
        data.eval["test"]
    val = data.eval["val"]
    return dict(label_metrics(logits[test], labels[test],
                              None if reference is None else reference[test]),
                val_accuracy=float(np.mean(np.argmax(logits[val], -1) == labels[val])))

  def agreement(self, student_outputs, teacher_outputs) -> float:
    return top1_agreement(student_outputs, teacher_outputs)

  def validation(self, data, fraction, seed) -> TaskData:
    """The split's own validation nodes become the held-out set (``fraction`` unused)."""
    return dataclasses.replace(data, name=f"{data.name}[val]",
                               eval=dict(data.eval, test=data.eval["val"]),
                               identity=dict(data.identity, validation="split"))


TASKS.register("node_classification")(NodeClassification())
