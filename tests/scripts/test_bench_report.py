"""The benchmark report: rendered from results, written between its markers without touching the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scripts.bench import report


def results(pipeline: dict[str, Any]) -> dict[str, Any]:
    return {
        "started_at": "2026-11-25 23:00 UTC",
        "repeat": 3,
        "machine": {
            "cpu": "Test CPU",
            "cores": 2,
            "memory_gib": 24.0,
            "kernel": "6.0",
            "python": "3.11.7",
            "postgresql": "15.18",
            "mosquitto": "2.0.11",
            "packages": {"gmqtt": "0.8.0"},
            "postgresql_settings": {"fsync": "on", "synchronous_commit": "on"},
        },
        "ceilings": {
            "batch": 5000,
            "publisher_devices": 20,
            "copy_unindexed": [200_000.0, 100_000.0, 300_000.0],
            "copy_vital_readings": [100_000.0, 90_000.0, 110_000.0],
            "gmqtt_receive": [40_000.0],
            "paho_receive": [10_000.0],
            "publisher": [50_000.0],
        },
        "baselines": {"batch": 1000, "row_at_a_time": [2_000.0], "executemany": [10_000.0]},
        "pipeline": pipeline,
        "ack_latency_samples": {"50% of max": [0.001, 0.002, 0.004]},
    }


def run(readings: int, committed: int) -> dict[str, Any]:
    return {
        "readings_per_message": readings,
        "offered_messages_per_s": 9000.0,
        "messages_sent": committed,
        "readings_sent": committed,
        "readings_committed": committed,
        "load_seconds": 10.0,
        "readings_per_s": 8000.0,
        "messages_per_s": 8000.0 / readings,
        "backlog_at_end": 10_000,
        "drain_seconds": 10.0,
        "lost": 0,
        "usage": {"ingest": {"cpu_percent": 90.0, "peak_rss_mib": 120.0}},
    }


def test_medians_ratios_and_skipped_pipeline_are_reported() -> None:
    text = report.render(results({"skipped": "ingest has no serve command"}), [])
    assert (
        "| COPY into an unindexed copy of `vital_readings` (rows/s, 5000-row transactions) |"
        " 200,000 (100,000–300,000, 3 runs) |" in text
    )
    assert "The real table's indexes cost 2.00×" in text
    assert "| one INSERT and commit per reading | 2,000 (1 run) | 0.01 |" in text
    assert "Not measured in this run: ingest has no serve command." in text
    assert text.startswith(report.BEGIN) and text.rstrip().endswith(report.END)


def test_pipeline_rates_count_the_drain_of_the_backlog() -> None:
    one, ten = run(1, 200_000), run(10, 400_000)
    pipeline = {
        "one": [one],
        "ten": [ten],
        "sweep": {1: [one]},
        "latency": {"50%": {"p50": 5.0, "p90": 9.0, "p99": 20.0, "p100": 30.0, "n": 100}},
    }
    text = report.render(results(pipeline), [])
    assert "| 1-reading messages, 125 % offered | 10,000 (1 run) | 8,000 (1 run) | 0 | 0.05 | 1.00 |" in text
    assert "| 10-reading messages, 125 % offered | 20,000 (1 run) |" in text
    assert "p99 20.0 ms" in text
    assert "9,000 → 8,000 (10,000)" in text


def test_the_page_keeps_what_others_wrote_around_the_generated_section(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\nIngest notes by hand.\n")
    report.write_page(page, f"{report.BEGIN}\nfirst\n{report.END}\n")
    page.write_text(page.read_text() + "\nProcessors notes after.\n")
    report.write_page(page, f"{report.BEGIN}\nsecond\n{report.END}\n")
    text = page.read_text()
    assert "Ingest notes by hand." in text and "Processors notes after." in text
    assert "second" in text and "first" not in text
    assert text.count(report.BEGIN) == 1


def test_plots_are_written(tmp_path: Path) -> None:
    one = run(1, 200_000)
    written = report.plot(results({"one": [one], "ten": [run(10, 1000)], "sweep": {1: [one]}}), tmp_path)
    assert {Path(p).name for p in written} == {
        "benchmarks-throughput.png",
        "benchmarks-mqtt.png",
        "benchmarks-offered-load.png",
        "benchmarks-latency.png",
    }
    assert all(Path(p).stat().st_size > 1000 for p in written)


def processed(committed: int, seconds: float) -> dict[str, Any]:
    return run(10, committed) | {
        "processed_seconds": seconds,
        "unprocessed": 0,
        "usage_until_processed": {
            "ingest": {"cpu_percent": 50.0, "peak_rss_mib": 120.0},
            "faust worker": {"cpu_percent": 70.0, "peak_rss_mib": 90.0},
            "postgres backends": {"cpu_percent": 20.0, "processes": 3},
        },
    }


def paging(p99: float, unpaged: int) -> dict[str, Any]:
    commit = {"p50": 20.0, "p90": 30.0, "p99": 40.0, "p100": 50.0, "n": 100}
    page = {"p50": 100.0, "p90": 200.0, "p99": p99, "p100": p99 + 1, "n": 100 - unpaged}
    return {"commit": commit, "page": page, "sent": 100, "unpaged": unpaged, "retrospective": unpaged}


def test_scaling_batch_settings_and_processors_are_reported_with_ratios() -> None:
    one, two = run(1, 100_000), run(1, 180_000)  # 5,000 and 9,000 readings/s over 20 s
    pipeline = {
        "one": [one],
        "ten": [run(10, 400_000)],
        "processes": {"readings_per_message": 1, "one": [one], "two": [two]},
        "batch_sizes": [run(10, 200_000) | {"batch_max_size": 100}, run(10, 300_000) | {"batch_max_size": 2000}],
        "batch_ages": {"5 ms": {"p50": 3.0, "p90": 4.0, "p99": 9.0, "p100": 12.0, "n": 50}},
    }
    processors = {
        "readings_per_message": 10,
        "offered_messages_per_s": 2000.0,
        "burst": 4000,
        "inline": [processed(40_000, 40.0)],
        "kafka": [processed(40_000, 20.0)],
        "paging": {"inline 50%": paging(900.0, 0), "Kafka 50%": paging(1500.0, 2)},
    }
    text = report.render(results(pipeline) | {"processors": processors}, [])
    assert "| 1 | 9,000 | 5,000 (1 run) | 8,000 (1 run) | 0 | 1.00 |" in text
    assert "| 2 | 9,000 | 9,000 (1 run) | 8,000 (1 run) | 0 | 1.80 |" in text
    assert "100 → 10,000 (0); 2,000 → 15,000 (0)" in text
    assert "5 ms → p50 3.0 ms, p99 9.0 ms" in text
    # 50 % CPU for 40 s over 40,000 readings: 500 ms per 1,000 readings.
    assert "| inline (in the ingest process) | 1,000 (1 run) | 8,000 (1 run) | 0 | 500 | 700 | 200 | 1.00 |" in text
    assert "| Kafka + Faust worker | 2,000 (1 run) | 8,000 (1 run) | 0 | 250 | 350 | 100 | 2.00 |" in text
    assert "| Kafka 50% of max | 20.0 / 30.0 / 40.0 ms | 100.0 / 200.0 / 1500.0 / 1501.0 ms | 100 | 2 (2) |" in text


def test_kafka_skipped_is_said() -> None:
    processors = {
        "readings_per_message": 10,
        "offered_messages_per_s": 2000.0,
        "burst": 4000,
        "inline": [processed(40_000, 40.0)],
        "kafka_skipped": "Kafka on 127.0.0.1:19092 does not answer",
        "paging": {},
    }
    text = report.render(results({"one": [run(1, 1000)], "ten": [run(10, 1000)]}) | {"processors": processors}, [])
    assert "| Kafka + Faust worker | not measured: Kafka on 127.0.0.1:19092 does not answer |" in text


def test_the_multiplexed_load_generator_is_reported_when_measured() -> None:
    measured = results({"skipped": "n/a"})
    assert "multiplexed" not in report.render(measured, [])
    measured["ceilings"] |= {"publisher_multiplexed": [60_000.0], "gmqtt_receive_multiplexed": [30_000.0]}
    text = report.render(measured, [])
    row = "| the same, multiplexed: 4 connections as the sandbox's load-generator user (msg/s) | 60,000 (1 run) |"
    assert row in text
    assert "| broker → gmqtt subscriber while multiplexed (msg/s) | 30,000 (1 run) |" in text


def test_runs_the_processors_never_finished_are_said_and_their_latency_is_not_measured() -> None:
    stuck = run(10, 40_000) | {"processed_seconds": None, "unprocessed": 40_000, "usage_until_processed": {}}
    processors = {
        "readings_per_message": 10,
        "offered_messages_per_s": 2000.0,
        "burst": 4000,
        "inline": [stuck],
        "paging": {},
        "paging_skipped": {"inline": "the inline processors did not take every reading of a burst, so no maximum"},
    }
    text = report.render(results({"one": [run(1, 1000)], "ten": [run(10, 1000)]}) | {"processors": processors}, [])
    assert "| inline: 1 run(s) not processed | 40,000 readings still untaken after 60 s without progress |" in text
    assert "| inline | not measured: the inline processors did not take every reading of a burst" in text


def test_the_commit_measured_and_uncommitted_files_are_named() -> None:
    measured = results({"skipped": "n/a"})
    measured["machine"]["code"] = {"commit": "abc1234", "modified": ["processors/engine.py"]}
    text = report.render(measured, [])
    assert "Code: commit abc1234, with uncommitted changes to 1 tracked file(s) in the shared tree" in text
    assert "(processors/engine.py)." in text


def test_probes_that_never_showed_up_are_counted() -> None:
    latency = {"p50": 5.0, "p90": 9.0, "p99": 20.0, "p100": 30.0, "n": 350, "sent": 600}
    pipeline = {"one": [run(1, 1000)], "ten": [run(10, 1000)], "latency": {"90%": latency}}
    pipeline["batch_ages"] = {"5 ms": latency, "50 ms": latency | {"n": 600}}
    text = report.render(results(pipeline), [])
    assert "p99 20.0 ms, max 30.0 ms (350 of 600 probes seen)." in text
    assert "5 ms → p50 5.0 ms, p99 20.0 ms (350 of 600 probes seen); 50 ms → p50 5.0 ms, p99 20.0 ms." in text


def test_postgres_backends_cpu_is_reported_beside_the_processes() -> None:
    usage = {
        "ingest": {"cpu_percent": 90.0, "peak_rss_mib": 120.0},
        "load generator": {"cpu_percent": 40.0, "peak_rss_mib": 60.0},
        "postgres backends": {"cpu_percent": 55.5, "processes": 3},
        "postgres writers (shared)": {"cpu_percent": 4.0},
    }
    text = report.resource_use(usage)
    assert text.startswith("ingest 90.0% CPU, 120.0 MiB peak RSS; load generator 40.0% CPU, 60.0 MiB peak RSS;")
    assert "PostgreSQL backends 55.5% CPU (3 backends of the sandbox database)" in text
    assert "background writer 4.0% CPU (shared with every other database of the cluster" in text
    # Results saved before the backends were sampled say so rather than showing nothing.
    older = report.resource_use(
        {"ingest": usage["ingest"], "postgres (all)": {"cpu_percent": 9.0, "peak_rss_mib": 1.0}}
    )
    assert older == "ingest 90.0% CPU, 120.0 MiB peak RSS (PostgreSQL's own CPU was not attributed in this run)."


def test_a_kafka_run_whose_worker_died_says_so_instead_of_rates() -> None:
    log = "/var/tmp/rpm-telemetry/bench-logs/bench_x-kafka1-processors.log"
    ok = processed(40_000, 20.0) | {"worker": {"restarts": 1, "exit_status": None, "log": "a.log"}}
    dead = processed(40_000, 10.0) | {"worker": {"restarts": 2, "exit_status": 1, "log": log}}
    processors = {
        "readings_per_message": 10,
        "offered_messages_per_s": 2000.0,
        "burst": 4000,
        "inline": [processed(40_000, 40.0)],
        "kafka": [ok, dead],
        "paging": {},
    }
    text = report.render(results({"one": [run(1, 1000)], "ten": [run(10, 1000)]}) | {"processors": processors}, [])
    # Only the run whose worker lived is in the rates (the dead one's 4,000 readings/s is not).
    assert "| Kafka + Faust worker | 2,000 (1 run) | 8,000 (1 run) | 0 | 250 | 350 | 100 | 2.00 |" in text
    assert (
        f"| Kafka + Faust worker, run 2 | not measured: the worker died (exit 1) after 2 watchdog restart(s);"
        f" log: `{log}` |" in text
    )
    assert "Faust worker watchdog restarts (exit 70, restarted as a supervisor would) per Kafka run: 1, 2" in text
    assert report.worker_died(dead) and not report.worker_died(ok) and not report.worker_died(run(10, 1))
