"""make bench's write-path suite: its echo limit and load processes work, its table reads."""

from __future__ import annotations

from pathlib import Path

from bbd import scalebench


def test_the_echo_limit_answers_load_from_several_processes(tmp_path: Path) -> None:
    echo = scalebench.Echo(tmp_path / "echo")
    try:
        echo.start()
        result = scalebench.measure(echo, clients=4, seconds=1.0, procs=2)
    finally:
        echo.stop()
    assert result["failed"] == 0
    assert result["rate"] > 50  # every request answered OK by the echo worker
    assert result["p50_ms"] <= result["p99_ms"]


def test_the_table_gives_ratios_to_the_echo_limit_and_to_an_empty_history() -> None:
    def r(rate: float, p99: float) -> dict[str, float]:
        return {"rate": rate, "p50_ms": 1.0, "p99_ms": p99, "cpu_ms_per_op": 0.5, "failed": 0}

    results = {("echo", 0, 16): r(1000, 10)}
    for setup in ("1 server", "3 servers"):
        results[(setup, 0, 16)] = r(400, 20)
        results[(setup, 100_000, 16)] = r(360, 30)
    results[("3 servers", 0, 16)]["files_lag_s"] = 0.85
    results[("3 servers", 100_000, 16)]["files_lag_s"] = float("inf")
    text = scalebench.table(results, {100_000: {"rss_per_post": 550, "restart_s": 2.5,
                                                "catchup_s": 7.0}}, [0, 100_000], [16])
    assert "| 3 servers | 100,000 | 16 | 360 | 0.360x | 1.00 ms | 30.0 ms | 3.0x |" in text
    assert "| 0 | 1.00x | 0.85 s | - | - | - |" in text
    assert "| 100,000 | 0.90x | never | 550 B | 2.5 s | 7.0 s |" in text


def test_the_data_files_probe_sees_acknowledged_posts_reach_the_files(tmp_path: Path) -> None:
    setup = scalebench.Setup("1 server", tmp_path / "board", 1, 0)
    try:
        setup.start()
        result = scalebench.measure(setup, clients=2, seconds=2.5, procs=1, probe_files=True)
    finally:
        setup.stop()
    assert result["failed"] == 0
    # Flushed every snapshot_interval (0.75 s): a probed post is in the file within about that.
    assert 0 < result["files_lag_s"] < 3.0
