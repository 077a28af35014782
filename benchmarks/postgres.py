"""PostgresStore against psql's large-object commands, side by side on one server.

Usage::

    python -m benchmarks postgres --size-mb 1024

It creates a throw-away database on the server named by ``--url`` (default
``STATECHECKPOINT_POSTGRES_URL`` or the local server), then, in alternating
order each round, times

* ``PostgresStore.save_checkpoint`` of a ``bytes`` weights blob against
  ``psql -c '\\lo_import FILE'`` of the same bytes,
* ``PostgresStore.load_checkpoint`` (checksum verified) against
  ``psql -c '\\lo_export OID FILE'``,

with a ``CHECKPOINT`` before each timed step, and keeps each side's best round.
The save's peak memory is measured in a fresh process: the rise of the peak
resident set (``VmHWM``) over the resident set with the blob already allocated.

Prints one JSON object per comparison per line: ``name``, ``value`` (the store),
``baseline`` (psql, or the 256 MiB budget for memory), ``ratio`` (higher is
better), ``target`` and ``met``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

MIB = 1 << 20
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
MEMORY_BUDGET_MIB = 256
SPEED_TARGET = 1.5
_CHILD_ENV = "STATECHECKPOINT_BENCH_CONNINFO"


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints its JSON lines; returns 0 when all are met."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks postgres")
    parser.add_argument("--size-mb", type=int, default=1024, help="blob size, MiB")
    parser.add_argument(
        "--url",
        default=os.environ.get("STATECHECKPOINT_POSTGRES_URL", DEFAULT_URL),
        help="a database on the server; the benchmark makes its own next to it",
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds per side")
    parser.add_argument("--chunk-mib", type=int, default=8, help="store chunk size")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.memory_child:
        return _memory_child(args.size_mb * MIB, args.chunk_mib * MIB)
    if shutil.which("psql") is None:
        print("psql is not on PATH; it is the baseline", file=sys.stderr)
        return 2

    with _database(args.url) as conninfo:
        added_mib = _measure_memory(conninfo, args.size_mb, args.chunk_mib)
        save, load = _measure_speed(conninfo, args)

    size = args.size_mb
    results = [
        _comparison(f"postgres_save_{size}mib_seconds", *save, target=SPEED_TARGET),
        _comparison(f"postgres_load_{size}mib_seconds", *load, target=SPEED_TARGET),
        _comparison(
            f"postgres_save_{size}mib_peak_added_mib",
            added_mib,
            float(MEMORY_BUDGET_MIB),
            target=1.0,
        ),
    ]
    for result in results:
        print(json.dumps(result), flush=True)
    return 0 if all(result["met"] for result in results) else 1


def _comparison(
    name: str, value: float, baseline: float, *, target: float
) -> dict[str, Any]:
    ratio = baseline / value if value > 0 else float("inf")
    return {
        "name": name,
        "value": round(value, 3),
        "baseline": round(baseline, 3),
        "ratio": round(ratio, 3),
        "target": target,
        "met": ratio >= target,
    }


class _database:
    """Creates a throw-away database next to ``url``; yields its conninfo."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = f"statecheckpoint_bench_{uuid.uuid4().hex[:12]}"

    def __enter__(self) -> str:
        import psycopg
        from psycopg import sql
        from psycopg.conninfo import make_conninfo

        with psycopg.connect(self.url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name))
            )
        return make_conninfo(self.url, dbname=self.name)

    def __exit__(self, *exc: object) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(self.name)
                )
            )


# -- speed ------------------------------------------------------------------------


def _measure_speed(
    conninfo: str, args: argparse.Namespace
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Returns ``(store, psql)`` best seconds for save and for load."""
    from statecheckpoint import ModelCheckpoint
    from statecheckpoint.blocks import PostgresStore

    size = args.size_mb * MIB
    store = PostgresStore(connection_string=conninfo, chunk_bytes=args.chunk_mib * MIB)
    store.ensure_schema()
    data = os.urandom(size)
    folder = Path(tempfile.mkdtemp(prefix="statecheckpoint-bench-"))
    source, exported = folder / "blob.bin", folder / "exported.bin"
    source.write_bytes(data)
    env = _psql_env(conninfo)
    best = {"save": [float("inf")] * 2, "load": [float("inf")] * 2}

    def run_store() -> None:
        _checkpoint(conninfo)
        start = time.perf_counter()
        record_id = store.save_checkpoint(ModelCheckpoint(weights=data))
        saved = time.perf_counter() - start
        _checkpoint(conninfo)
        start = time.perf_counter()
        loaded = store.load_checkpoint(record_id)
        read = time.perf_counter() - start
        assert loaded is not None and loaded.weights == data, "store round trip"
        del loaded
        store.delete_checkpoint(record_id)
        _report("store", size, saved, read)
        best["save"][0] = min(best["save"][0], saved)
        best["load"][0] = min(best["load"][0], read)

    def run_psql() -> None:
        _checkpoint(conninfo)
        start = time.perf_counter()
        out = _psql(env, f"\\lo_import {source}")
        saved = time.perf_counter() - start
        oid = int(out.split()[-1])
        _checkpoint(conninfo)
        start = time.perf_counter()
        _psql(env, f"\\lo_export {oid} {exported}")
        read = time.perf_counter() - start
        assert exported.stat().st_size == size, "psql round trip"
        exported.unlink()
        _psql(env, f"\\lo_unlink {oid}")
        _report("psql", size, saved, read)
        best["save"][1] = min(best["save"][1], saved)
        best["load"][1] = min(best["load"][1], read)

    try:
        for round_number in range(args.repeat):
            order = (
                (run_store, run_psql)
                if round_number % 2 == 0
                else (run_psql, run_store)
            )
            for step in order:
                step()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return (best["save"][0], best["save"][1]), (best["load"][0], best["load"][1])


def _report(who: str, size: int, saved: float, read: float) -> None:
    print(
        f"{who:5s} save {saved:7.2f} s ({size / saved / 1e6:6.1f} MB/s)  "
        f"load {read:7.2f} s ({size / read / 1e6:6.1f} MB/s)",
        file=sys.stderr,
        flush=True,
    )


def _checkpoint(conninfo: str) -> None:
    """Flushes what the previous step left dirty, so that no step pays for it."""
    import psycopg

    # Needs superuser or pg_checkpoint; without it the rounds are noisier.
    with (
        psycopg.connect(conninfo, autocommit=True) as connection,
        contextlib.suppress(psycopg.Error),
    ):
        connection.execute("CHECKPOINT")


def _psql_env(conninfo: str) -> dict[str, str]:
    """Passes the connection to psql through PG* variables, not its command line."""
    from psycopg.conninfo import conninfo_to_dict

    names = {
        "host": "PGHOST",
        "port": "PGPORT",
        "dbname": "PGDATABASE",
        "user": "PGUSER",
        "password": "PGPASSWORD",
        "sslmode": "PGSSLMODE",
    }
    env = dict(os.environ)
    for key, value in conninfo_to_dict(conninfo).items():
        if key in names and value is not None:
            env[names[key]] = str(value)
    return env


def _psql(env: dict[str, str], command: str) -> str:
    done = subprocess.run(
        ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", command],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


# -- memory -----------------------------------------------------------------------


def _measure_memory(conninfo: str, size_mb: int, chunk_mib: int) -> float:
    """Runs one save in a fresh process; returns the MiB it added to peak RSS."""
    env = {**os.environ, _CHILD_ENV: conninfo}
    command = [sys.executable, "-m", "benchmarks.postgres", "--memory-child"]
    command += ["--size-mb", str(size_mb), "--chunk-mib", str(chunk_mib)]
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        command, env=env, cwd=root, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the memory probe failed: {done.stderr.strip()}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"save peak RSS: {result['before_mib']:.0f} MiB with the blob, "
        f"{result['peak_mib']:.0f} MiB at most during the save",
        file=sys.stderr,
    )
    return float(result["peak_mib"] - result["before_mib"])


def _memory_child(size: int, chunk_bytes: int) -> int:
    from statecheckpoint import ModelCheckpoint
    from statecheckpoint.blocks import PostgresStore

    store = PostgresStore(
        connection_string=os.environ[_CHILD_ENV], chunk_bytes=chunk_bytes
    )
    store.ensure_schema()
    data = os.urandom(size)
    before = _status_mib("VmRSS")
    try:
        # Resets VmHWM to the current RSS, so the peak below is the save's own.
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        before = max(before, _status_mib("VmHWM"))
    record_id = store.save_checkpoint(ModelCheckpoint(weights=data))
    peak = _status_mib("VmHWM")
    store.delete_checkpoint(record_id)
    print(json.dumps({"before_mib": before, "peak_mib": peak}))
    return 0


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


if __name__ == "__main__":
    sys.exit(main())
