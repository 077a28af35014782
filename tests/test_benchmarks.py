"""The benchmarks run end to end at a tiny size, so they cannot rot.

No timing is asserted: at a few MiB the numbers mean nothing. What is checked is
that every comparison is measured and reported in the agreed shape.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from benchmarks import __main__ as dispatch
from benchmarks import _cache, filesystem
from benchmarks._common import MIB, Comparison, MemoryProbe, bounded, faster, report

FIELDS = {"name", "value", "baseline", "ratio", "target", "met"}
FILESYSTEM_COMPARISONS = {
    "save_vs_fsync_write_limit",
    "save_vs_safetensors",
    "save_vs_direct_io_write",
    "load_vs_raw_read",
    "load_verified_vs_raw_read",
    "background_save_blocking_vs_numpy_copy",
    "background_save_blocking_bytes",
    "training_overhead_sync",
    "training_overhead_background",
    "prefect_task_overhead_per_save",
    "peak_memory_sync_save",
    "peak_memory_background_save_mutable",
    "peak_memory_load",
}
HAS_TORCH = importlib.util.find_spec("torch") is not None


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_faster_orients_the_ratio_so_that_higher_is_better():
    quicker = faster("save", 1.0, 2.0, "baseline", 0.9)
    slower = faster("save", 4.0, 2.0, "baseline", 0.9)

    assert (quicker.ratio, quicker.met) == (2.0, True)
    assert (slower.ratio, slower.met) == (0.5, False)
    assert faster("info", 1.0, 1.0, "baseline", None).met is None


def test_bounded_checks_both_bounds_and_words_the_target():
    within = bounded("memory", 10.0, "MiB", most=64, baseline=20.0)
    beyond = bounded("share", 20.0, "%", least=30)

    assert within.met and within.ratio == 2.0 and within.target == "value <= 64 MiB"
    assert not beyond.met and beyond.ratio is None
    assert beyond.target == "value >= 30 %"


def test_report_prints_a_table_then_one_json_object_per_line(capsys):
    items = [
        faster("a_vs_b", 1.0, 2.0, "b", 0.9, extra_field=3),
        Comparison("c", None, "s", None, "", None, "none", None),
    ]

    assert report(items) is True
    out = capsys.readouterr().out
    lines = _json_lines(out)

    assert out.splitlines()[0].split()[:3] == ["comparison", "ours", "baseline"]
    assert [line["name"] for line in lines] == ["a_vs_b", "c"]
    assert all(line.keys() >= FIELDS for line in lines)
    assert lines[0]["extra_field"] == 3


def test_memory_probe_sees_what_was_allocated_inside():
    np = pytest.importorskip("numpy")

    with MemoryProbe() as probe:
        block = np.ones(64 * MIB, dtype=np.uint8)
        del block

    assert 60 <= probe.growth_mib < 200


def test_dispatch_refuses_an_unknown_benchmark(capsys):
    assert dispatch.main(["nosuch"]) == 2
    assert "usage: python -m benchmarks" in capsys.readouterr().err


def test_evict_makes_a_file_cold_or_says_warm(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(b"x" * (4 * MIB))

    mode = _cache.evict([str(path)], drop_caches=False)

    assert mode in {"cold (posix_fadvise DONTNEED)", "warm"}
    if mode != "warm":
        assert _cache.resident_fraction(str(path)) < 0.05


@pytest.mark.slow
@pytest.mark.prefect
def test_filesystem_benchmark_reports_every_comparison(
    tmp_path, capsys, prefect_server
):
    code = filesystem.main(
        [
            "--size-mb",
            "4",
            "--rounds",
            "1",
            "--prefect-rounds",
            "2",
            "--load-rounds",
            "1",
            "--results",
            str(tmp_path / "results"),
            "--plot",
            str(tmp_path / "plot.png"),
            "--api-url",
            prefect_server,
            "--evict",
            "fadvise",
        ]
    )

    lines = _json_lines(capsys.readouterr().out)
    names = {line["name"] for line in lines}
    expected = FILESYSTEM_COMPARISONS | ({"save_vs_torch_save"} if HAS_TORCH else set())
    assert code in (0, 1)
    assert names == expected
    assert all(line.keys() >= FIELDS for line in lines)
    training = [line for line in lines if line["name"].startswith("training_")]
    assert all(line["standard_error_pct"] is not None for line in training)
    assert training[-1]["blocked_pct"] > 0
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    raw = json.loads((tmp_path / "results" / "filesystem-4mib.json").read_text())
    assert raw["size_mb"] == 4 and "machine" in raw
    assert not (tmp_path / "results" / "data").exists()
