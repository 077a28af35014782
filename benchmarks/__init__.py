"""Side-by-side measurements of statecheckpoint against what it competes with.

Run one with ``python -m benchmarks NAME [options]``:

* ``filesystem``: the file-system store against the disk's fsync write limit,
  raw reads, ``safetensors`` and ``torch.save``; background saves, a training
  loop, Prefect's overhead and peak memory (``benchmarks.filesystem``).
* ``postgres``: the PostgreSQL store against ``psql`` (``benchmarks.postgres``).

Each prints a table and one JSON object per comparison per line (see
``benchmarks._common``) and exits with 0 when every target is met.
"""
