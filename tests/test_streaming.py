"""Streaming input (grain over ArrayRecord / TFDS / arrays) and host-side augmentation."""
import json
import re
import time

import numpy as np
import pytest

from distill_jax.data import augment
from distill_jax.data.streaming import (ArrayRecordSource, InMemorySource, Stream, read_rows,
                                        tfds_source, write_array_record)
from distill_jax.errors import InputError, MissingInput, UnknownName


def _arrays(n=40, hw=6, seed=0):
  rng = np.random.default_rng(seed)
  return {"x": rng.random((n, hw, hw, 3), dtype=np.float32),
          "y": rng.integers(0, 10, n).astype(np.int32), "id": np.arange(n, dtype=np.int32)}


def _ids(stream, steps):
  return np.concatenate([stream.batch(s)["id"] for s in steps])


def _same(a: dict, b: dict):
  assert sorted(a) == sorted(b)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_array_record_round_trip_in_shards(tmp_path):
  arrays = _arrays(11)
  paths = write_array_record(str(tmp_path / "data"), arrays, num_shards=3)
  assert [p.rsplit("/", 1)[1] for p in paths] == [
      f"data-{i:05d}-of-00003.array_record" for i in range(3)]
  source = ArrayRecordSource(paths)
  assert len(source) == 11
  for i in range(11):
    _same(source[i], {k: v[i] for k, v in arrays.items()})
    assert source[i]["x"].dtype == np.float32 and source[i]["y"].dtype == np.int32
  with pytest.raises(MissingInput, match="nope"):
    ArrayRecordSource([paths[0], str(tmp_path / "nope")])


def test_one_epoch_visits_every_record_once_then_reshuffles():
  stream = Stream(InMemorySource(_arrays(40)), batch_size=8, seed=3)
  assert stream.steps_per_epoch == 5
  first, second = _ids(stream, range(5)), _ids(stream, range(5, 10))
  np.testing.assert_array_equal(np.sort(first), np.arange(40))
  np.testing.assert_array_equal(np.sort(second), np.arange(40))
  assert not np.array_equal(first, second) and not np.array_equal(first, np.arange(40))
  other = Stream(InMemorySource(_arrays(40)), batch_size=8, seed=4)
  assert not np.array_equal(first, _ids(other, range(5)))


def test_two_hosts_read_disjoint_shards_covering_the_data():
  source = InMemorySource(_arrays(41))      # 41: one record is cut so both hosts have 20
  hosts = [Stream(source, batch_size=8, seed=0, process_index=i, process_count=2)
           for i in range(2)]
  assert [h.local_batch_size for h in hosts] == [4, 4]
  seen = [_ids(h, range(h.steps_per_epoch)) for h in hosts]
  assert all(len(np.unique(s)) == len(s) == 20 for s in seen)
  assert not set(seen[0]) & set(seen[1])
  assert set(seen[0]) | set(seen[1]) == set(range(40))
  with pytest.raises(InputError, match="batch_size 9 does not split over 2"):
    Stream(source, batch_size=9, seed=0, process_count=2)


def _pipeline():
  return augment.from_config(("crop:2", "flip", "mixup:0.4"))


def test_resumed_stream_continues_with_the_same_batches(tmp_path):
  paths = write_array_record(str(tmp_path / "d"), _arrays(40), num_shards=2)
  first = Stream(ArrayRecordSource(paths), 8, seed=1, transform=_pipeline())
  in_order = [first.batch(s) for s in range(8)]
  resumed = Stream(ArrayRecordSource(paths), 8, seed=1, transform=_pipeline())
  for s in (5, 6, 7, 2, 3):                 # a resume, then a jump back (re-positioned)
    _same(resumed.batch(s), in_order[s])
  assert in_order[5]["x"].shape == (8, 6, 6, 3) and in_order[5]["mixup_lambda"].shape == (8,)
  assert not np.allclose(in_order[5]["x"], in_order[6]["x"])
  # the transform's rng depends on the step: each batch draws its own mixup lambda
  assert not np.array_equal(in_order[0]["mixup_lambda"], in_order[5]["mixup_lambda"])


def test_worker_processes_give_the_in_process_batches(tmp_path):
  paths = write_array_record(str(tmp_path / "d"), _arrays(40), num_shards=2)
  crops = augment.example_from_config("inception_crop:5,flip")
  reference = Stream(ArrayRecordSource(paths), 8, seed=2, transform=_pipeline(),
                     example_transform=crops)
  expected = {s: reference.batch(s) for s in (5, 6, 7)}
  assert expected[5]["x"].shape == (8, 5, 5, 3)
  with Stream(ArrayRecordSource(paths), 8, seed=2, transform=_pipeline(),
              example_transform=crops, num_workers=2) as workers:
    for s in (5, 6, 7):                     # a resume at 5, then served in order by the workers
      _same(workers.batch(s), expected[s])


def test_state_is_json_and_check_state_names_the_differing_key():
  source = InMemorySource(_arrays(40))
  stream = Stream(source, 8, seed=1)
  stream.batch(0), stream.batch(1), stream.batch(2)
  state = json.loads(json.dumps(stream.state(3)))
  assert state["step"] == 3 and state["epoch"] == 0 and state["index_in_epoch"] == 3
  assert state["grain"] == {"start": 0, "state": {"next_index": 3}}
  Stream(source, 8, seed=1).check_state(state)
  for other, key in ((Stream(source, 8, seed=2), "seed"), (Stream(source, 4, seed=1), "batch_size"),
                     (Stream(source, 8, seed=1, process_count=2), "process_count"),
                     (Stream(InMemorySource(_arrays(48)), 8, seed=1), "num_records")):
    with pytest.raises(InputError, match=f"'{key}'"):
      other.check_state(state)
  with pytest.raises(InputError, match="lacks key 'seed'"):
    stream.check_state({k: v for k, v in state.items() if k != "seed"})


def _shifted(image, dy, dx, pad):
  """Hand-made by loops: the H x W window at (dy, dx) of the image zero-padded by ``pad``."""
  h, w, _ = image.shape
  out = np.zeros_like(image)
  for i in range(h):
    for j in range(w):
      si, sj = i + dy - pad, j + dx - pad
      if 0 <= si < h and 0 <= sj < w:
        out[i, j] = image[si, sj]
  return out


def test_random_crop_is_a_zero_filled_shift():
  image = np.arange(1, 4 * 5 * 2 + 1, dtype=np.float32).reshape(4, 5, 2)
  batch = {"x": np.stack([image] * 32), "y": np.arange(32)}
  out = augment.random_crop(pad=2)(batch, np.random.default_rng(0))
  shifts = {(dy, dx): _shifted(image, dy, dx, 2) for dy in range(5) for dx in range(5)}
  found = []
  for crop in out["x"]:
    matches = [k for k, v in shifts.items() if np.array_equal(crop, v)]
    assert len(matches) == 1
    found.append(matches[0])
  assert len(set(found)) > 5 and (2, 2) in shifts
  np.testing.assert_array_equal(out["y"], np.arange(32))


def test_flip_mirrors_about_half_exactly():
  x = np.random.default_rng(0).random((64, 3, 4, 2), dtype=np.float32)
  out = augment.flip()({"x": x}, np.random.default_rng(1))["x"]
  flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, x)]
  kept = [np.array_equal(o, i) for o, i in zip(out, x)]
  assert all(f != k for f, k in zip(flipped, kept))
  assert 16 < sum(flipped) < 48


def test_mixup_and_cutmix_mix_with_the_neighbour():
  x = np.random.default_rng(0).random((6, 4, 4, 3), dtype=np.float32)
  out = augment.mixup(0.4)({"x": x, "y": np.arange(6)}, np.random.default_rng(7))
  lam = np.random.default_rng(7).beta(0.4, 0.4)
  assert out["mixup_lambda"].dtype == np.float32 and out["mixup_lambda"].shape == (6,)
  np.testing.assert_allclose(out["mixup_lambda"], lam, rtol=1e-6)   # one per row, all equal
  np.testing.assert_allclose(out["x"], lam * x + (1 - lam) * np.roll(x, 1, axis=0), rtol=1e-6)
  np.testing.assert_array_equal(out["y"], np.arange(6))   # labels: mixed by the loss terms
  np.testing.assert_array_equal(out["y_mix"], [5, 0, 1, 2, 3, 4])   # each row's partner

  ids = np.broadcast_to(np.arange(6, dtype=np.float32)[:, None, None, None], (6, 8, 8, 1))
  nontrivial = 0
  for seed in range(10):
    cut = augment.cutmix(1.0)({"x": ids}, np.random.default_rng(seed))
    own = cut["x"] == ids
    assert np.all(own | (cut["x"] == np.roll(ids, 1, axis=0)))
    kept = own.reshape(6, -1).mean(1)
    np.testing.assert_allclose(kept, cut["mixup_lambda"], rtol=1e-6)
    nontrivial += 0.0 < cut["mixup_lambda"][0] < 1.0
  assert nontrivial >= 5


def test_inception_crop_shape_constant_image_and_bilinear_resize():
  x = np.full((3, 9, 7, 2), 0.37, np.float32)
  out = augment.inception_crop(16)({"x": x}, np.random.default_rng(0))["x"]
  assert out.shape == (3, 16, 16, 2) and out.dtype == np.float32
  np.testing.assert_allclose(out, 0.37, atol=1e-6)
  ramp = np.array([0.0, 1.0], np.float32).reshape(1, 2, 1)
  np.testing.assert_allclose(augment.resize_bilinear(ramp, 1, 4)[0, :, 0],
                             [0.0, 0.25, 0.75, 1.0])
  image = np.random.default_rng(0).random((5, 6, 3)).astype(np.float32)
  np.testing.assert_array_equal(augment.resize_bilinear(image, 5, 6), image)


def test_from_config_builds_by_name_and_rejects_unknown_names():
  x = np.random.default_rng(0).random((4, 8, 8, 3), dtype=np.float32)
  out = augment.from_config(("crop", "flip", "cutmix:1.0"))({"x": x}, np.random.default_rng(0))
  assert out["x"].shape == x.shape and "mixup_lambda" in out
  out = augment.from_config(["inception_crop:5"])({"x": x}, np.random.default_rng(0))
  assert out["x"].shape == (4, 5, 5, 3)
  with pytest.raises(UnknownName, match="'rotate'"):
    augment.from_config(("flip", "rotate:3"))
  with pytest.raises(InputError, match="needs an argument"):
    augment.from_config(("inception_crop",))
  with pytest.raises(InputError, match="at most one of mixup/cutmix"):
    augment.from_config(("mixup:0.2", "cutmix:1.0"))
  with pytest.raises(InputError, match=r"\(N, H, W, C\), got \(4, 3\)"):
    augment.flip()({"x": np.zeros((4, 3))}, np.random.default_rng(0))


def test_mocked_tfds_cifar100_streams_images_and_labels(tmp_path):
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
    source = tfds_source("cifar100", "train", data_dir=str(tmp_path))
    assert len(source) == 24 and source.keys == ("image", "label")
    stream = Stream(source, batch_size=8, seed=0, transform=augment.from_config(("crop", "flip")))
    batches = [stream.batch(s) for s in range(3)]
  for b in batches:
    assert b["x"].shape == (8, 32, 32, 3) and b["x"].dtype == np.float32
    assert 0.0 <= b["x"].min() and b["x"].max() <= 1.0 and b["x"].max() > 0.5
    assert b["y"].dtype == np.int32 and 0 <= b["y"].min() and b["y"].max() < 100


def test_unprepared_tfds_dataset_fails_fast_naming_it(tmp_path):
  start = time.perf_counter()
  where = re.escape(f"'cifar100' is not prepared in data_dir '{tmp_path}'")
  with pytest.raises(MissingInput, match=where + ".*download=False"):
    tfds_source("cifar100", "train", data_dir=str(tmp_path))
  assert time.perf_counter() - start < 10
  assert not any(tmp_path.iterdir())       # nothing downloaded or written


class _SizedSource:
  """Images of two sizes (as ImageNet's differ), which InMemorySource's arrays cannot hold."""

  def __init__(self, n=24, seed=0):
    rng = np.random.default_rng(seed)
    self.images = [rng.random((9, 7, 3) if i % 2 else (6, 11, 3), dtype=np.float32)
                   for i in range(n)]

  def __len__(self):
    return len(self.images)

  def __getitem__(self, index):
    return {"x": self.images[index], "id": np.int32(index)}


def test_per_example_crops_of_mixed_sizes_are_the_same_after_a_resume():
  crops = augment.example_from_config(["inception_crop:5", "flip"])

  def make():
    return Stream(_SizedSource(), 4, seed=1, example_transform=crops, transform=augment.mixup(0.4))
  first = make()
  assert first.steps_per_epoch == 6
  in_order = [first.batch(s) for s in range(9)]
  resumed = make()
  for s in (5, 8, 7, 0):                    # a fresh stream asked for step 5, then jumps
    _same(resumed.batch(s), in_order[s])
  assert in_order[5]["x"].shape == (4, 5, 5, 3) and in_order[5]["x"].dtype == np.float32
  # the rng is per record and per epoch: a record seen in epochs 0 and 1 is cropped anew
  ids = [_ids(first, range(e * 6, e * 6 + 6)) for e in (0, 1)]
  plain = Stream(_SizedSource(), 4, seed=1, example_transform=crops)
  x = [np.concatenate([plain.batch(s)["x"] for s in range(e * 6, e * 6 + 6)]) for e in (0, 1)]
  record = ids[0][0]
  assert not np.allclose(x[0][0], x[1][list(ids[1]).index(record)])
  with pytest.raises(InputError, match=r"key 'x' has shape \(\d+, \d+, 3\).*center_crop"):
    Stream(_SizedSource(), 4, seed=1).batch(0)


def test_center_crop_example_is_the_central_window_after_the_short_side_resize():
  image = np.arange(8 * 6 * 2, dtype=np.float32).reshape(8, 6, 2)
  crop = augment.center_crop_example(6, resize=6)          # short side already 6: no resize
  out = crop({"x": image, "y": 3}, np.random.default_rng(0))
  np.testing.assert_array_equal(out["x"], image[1:7])      # rows (8 - 6) // 2 = 1 .. 6
  assert out["y"] == 3
  wide = image.transpose(1, 0, 2)                           # 6 x 8: the central columns
  np.testing.assert_array_equal(crop({"x": wide}, None)["x"], wide[:, 1:7])
  # default resize round(4 / 0.875) = 5: 6 x 8 -> 5 x round(8 * 5 / 6) = 5 x 7, crop at (0, 1)
  out = augment.center_crop_example(4)({"x": wide}, np.random.default_rng(1))["x"]
  np.testing.assert_allclose(out, augment.resize_bilinear(wide, 5, 7)[0:4, 1:5])
  big = augment.example_from_config("center_crop:224")(
      {"x": np.zeros((300, 400, 3), np.uint8)}, None)["x"]
  assert big.shape == (224, 224, 3) and big.dtype == np.float32
  with pytest.raises(InputError, match="resize 3 >= size"):
    augment.center_crop_example(4, resize=3)


def test_inception_and_flip_examples_and_example_from_config():
  x = np.full((9, 7, 2), 0.37, np.float32)
  out = augment.inception_crop_example(16)({"x": x, "y": 1}, np.random.default_rng(0))
  assert out["x"].shape == (16, 16, 2) and out["x"].dtype == np.float32 and out["y"] == 1
  np.testing.assert_allclose(out["x"], 0.37, atol=1e-6)
  image = np.random.default_rng(0).random((3, 4, 1), dtype=np.float32)
  flips = [augment.flip_example()({"x": image}, np.random.default_rng(s))["x"]
           for s in range(20)]
  mirrored = sum(np.array_equal(f, image[:, ::-1]) for f in flips)
  assert sum(np.array_equal(f, image) for f in flips) + mirrored == 20 and 0 < mirrored < 20
  with pytest.raises(UnknownName, match="'rotate'"):
    augment.example_from_config(("flip", "rotate:3"))
  with pytest.raises(InputError, match="'center_crop' needs an argument"):
    augment.example_from_config(("center_crop",))
  with pytest.raises(InputError, match=r"example\['x'\] of shape \(H, W, C\), got \(2, 9, 7, 2\)"):
    augment.flip_example()({"x": np.zeros((2, 9, 7, 2))}, np.random.default_rng(0))


def test_read_rows_in_order_with_an_index_seeded_transform():
  arrays = _arrays(10)
  rows = read_rows(InMemorySource(arrays), np.array([7, 2, 2, 5]))
  _same(rows, {k: v[[7, 2, 2, 5]] for k, v in arrays.items()})
  source, crops = _SizedSource(), augment.example_from_config("inception_crop:4")
  a = read_rows(source, np.array([3, 1, 8]), crops, seed=5)
  b = read_rows(source, np.array([8, 3]), crops, seed=5)   # the rng follows the index
  assert a["x"].shape == (3, 4, 4, 3)
  np.testing.assert_array_equal(a["x"][[2, 0]], b["x"])
  assert not np.array_equal(a["x"], read_rows(source, np.array([3, 1, 8]), crops, seed=6)["x"])
  same = InMemorySource({"x": np.stack([source.images[0]] * 2)})   # one image at two indices
  twins = read_rows(same, np.array([0, 1]), crops)["x"]
  assert not np.array_equal(twins[0], twins[1])
  with pytest.raises(InputError, match=re.escape(
      "read_rows: key 'x' has shape (6, 11, 3) in example 0 but (9, 7, 3) in example 1")
      + ".*center_crop"):
    read_rows(source, np.array([0, 1]))
  with pytest.raises(InputError, match=r"idx must be in \[0, 24\)"):
    read_rows(source, np.array([0, 24]))
