"""The evaluate-and-adjust loop on the smoke search config."""
import json

from distill_jax import search
from distill_jax.config import load
from distill_jax.tasks import TASKS
from tests.helpers import ROOT, command


def _config(arg="smoke"):
  return load(f"{ROOT}/configs/digits_search.py", arg)


def test_validation_split_is_carved_from_training_data_only():
  task = TASKS.get("classification")
  full = task.load(_config())
  val = task.validation(full, 0.2, 0)
  assert len(val.train["x"]) + len(val.eval["x"]) == len(full.train["x"])
  train_rows = {r.tobytes() for r in full.train["x"]}
  assert all(r.tobytes() in train_rows for r in val.eval["x"])
  assert val.identity != full.identity


def test_search_cli_writes_a_leaderboard_and_plot_and_tests_only_the_chosen_plan(tmp_path):
  out = command("search", "--config=configs/digits_search.py:smoke", f"--workdir={tmp_path}")
  assert out.returncode == 0, out.stderr[-3000:]
  board = json.loads((tmp_path / "leaderboard.json").read_text())
  names = [e["plan"]["name"] for e in board["plans"]]
  assert names == ["width_2x32", "select_0_5_9"]           # target 0.99 never reached
  assert not board["reached_target"] and board["metric"] == "accuracy"
  chosen = [e for e in board["plans"] if e.get("chosen")]
  assert len(chosen) == 1 and chosen[0]["val"] == max(e["val"] for e in board["plans"])
  assert [("test" in e) for e in board["plans"]] == [bool(e.get("chosen"))
                                                    for e in board["plans"]]
  assert (tmp_path / "final" / "student" / "export" / "model.json").exists()
  assert board["plans"][0]["params"] == (64 * 32 + 32) + (32 * 32 + 32) + (32 * 10 + 10)
  assert (tmp_path / "search.png").stat().st_size > 1000
  assert "<- chosen" in out.stdout
  # a rerun reuses every plan's result (nothing is trained again)
  again = command("search", "--config=configs/digits_search.py:smoke", f"--workdir={tmp_path}")
  assert again.returncode == 0 and "plan width_2x32: validation" not in again.stdout


def test_search_stops_at_the_target_and_its_plans_use_the_config_feature_terms(tmp_path):
  config = _config()
  config.search.target = 0.01
  config.distill.terms = tuple(config.distill.terms) + (
      ("hint", 1.0, {"pairs": (("Dense_9", "Dense_2"),)}),)   # both the 10-way head
  board = search.search(config, str(tmp_path))
  assert [e["plan"]["name"] for e in board["plans"]] == ["width_2x32"]
  assert board["reached_target"] and board["plans"][0]["chosen"]
  records = [json.loads(l) for l in
             (tmp_path / "plans" / "width_2x32" / "seed_0" / "metrics.jsonl").read_text().splitlines()]
  assert all("hint" in r for r in records if r["split"] == "train")
