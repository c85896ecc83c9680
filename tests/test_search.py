"""The evaluate-and-adjust loop on the smoke search config."""
import importlib.util
import json
import subprocess
import sys

import numpy as np

from distill_jax import data as data_lib
from distill_jax import search
from tests.helpers import ROOT


def _config(arg="smoke"):
  spec = importlib.util.spec_from_file_location("cfg", f"{ROOT}/configs/digits_search.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_validation_split_is_carved_from_training_data_only():
  full = data_lib.load(_config().data)
  val = data_lib.split_train_val(full, 0.2, 0)
  assert len(val.x_train) + len(val.x_test) == len(full.x_train)
  train_rows = {r.tobytes() for r in full.x_train}
  assert all(r.tobytes() in train_rows for r in val.x_test)
  np.testing.assert_array_equal(full.x_test, data_lib.load(_config().data).x_test)


def test_search_cli_writes_a_leaderboard_and_plot_and_tests_only_the_chosen_plan(tmp_path):
  out = subprocess.run([sys.executable, "-m", "distill_jax.search",
                        "--config=configs/digits_search.py:smoke", f"--workdir={tmp_path}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  board = json.loads((tmp_path / "leaderboard.json").read_text())
  names = [e["plan"]["name"] for e in board["plans"]]
  assert names == ["width_2x32", "select_0_5_9"]           # target 0.99 never reached
  assert not board["reached_target"]
  chosen = [e for e in board["plans"] if e.get("chosen")]
  assert len(chosen) == 1 and chosen[0]["val_accuracy"] == max(e["val_accuracy"]
                                                                for e in board["plans"])
  assert [("test_accuracy" in e) for e in board["plans"]] == [bool(e.get("chosen"))
                                                             for e in board["plans"]]
  assert board["plans"][0]["params"] == (64 * 32 + 32) + (32 * 32 + 32) + (32 * 10 + 10)
  assert (tmp_path / "search.png").stat().st_size > 1000
  assert "<- chosen" in out.stdout


def test_search_stops_at_the_first_plan_that_reaches_the_target(tmp_path):
  config = _config()
  with config.unlocked():
    config.search.target = 0.01
  board = search.search(config, str(tmp_path))
  assert [e["plan"]["name"] for e in board["plans"]] == ["width_2x32"]
  assert board["reached_target"] and board["plans"][0]["chosen"]
