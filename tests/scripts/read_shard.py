"""One host of the loopback two-process shard test (tests/test_vision.py): joins the JAX
distributed job, streams one epoch of the ArrayRecord files named on the command line with
its own process index, and writes the record ids it read to OUT.<process index>.json."""
import json
import sys

import jax

from distill_jax.data.streaming import ArrayRecordSource, Stream


def main(address: str, index: int, out: str, *paths: str) -> None:
  jax.distributed.initialize(address, num_processes=2, process_id=index,
                             initialization_timeout=60)
  stream = Stream(ArrayRecordSource(list(paths)), batch_size=8, seed=0,
                  process_index=jax.process_index(), process_count=jax.process_count())
  ids = [int(i) for s in range(stream.steps_per_epoch) for i in stream.batch(s)["id"]]
  with open(f"{out}.{jax.process_index()}.json", "w") as f:
    json.dump({"process_index": jax.process_index(), "ids": ids}, f)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]), sys.argv[3], *sys.argv[4:])
