"""The sandbox database's backends found by process title, and their CPU over a stage from /proc samples."""

from __future__ import annotations

import os

from scripts.bench.backends import BackendCpu, backend_database, backend_ticks, cpu_ticks


def test_a_backend_title_names_its_database() -> None:
    assert backend_database("postgres: rpm_ingest bench_ab12 127.0.0.1(53834) idle") == "bench_ab12"
    assert backend_database("postgres: rpm_owner rpm [local] COPY") == "rpm"
    assert backend_database("postgres: main: rpm_ingest bench_ab12 127.0.0.1(5) idle in transaction") == "bench_ab12"


def test_the_servers_own_processes_name_no_database() -> None:
    for title in (
        "postgres: walwriter",
        "postgres: checkpointer ",
        "postgres: background writer",
        "postgres: logical replication launcher",
        "postgres: autovacuum launcher",
        "/usr/lib/postgresql/15/bin/postgres -D /var/tmp/rpm-telemetry/postgres/data",
        "python -m ingest serve",
    ):
        assert backend_database(title) is None, title


def test_cpu_ticks_are_utime_plus_stime_even_with_a_strange_command_name() -> None:
    fields = ["S", "1", "2", "3", "0", "-1", "4194368", "4220", "0", "0", "0", "80", "121", "0", "0", "20"]
    assert cpu_ticks("4571 (postgres) " + " ".join(fields)) == 201
    assert cpu_ticks("4571 (a) b (c) " + " ".join(fields)) == 201


def test_this_process_stat_parses() -> None:
    with open(f"/proc/{os.getpid()}/stat") as stat:
        assert cpu_ticks(stat.read()) >= 0


def test_stage_cpu_counts_from_the_start_for_old_pids_and_from_zero_for_new_ones() -> None:
    cpu = BackendCpu()
    cpu.start({10: 500, 11: 100})
    cpu.observe({10: 520, 11: 130, 12: 40})  # 12 connected during the stage
    cpu.observe({10: 560, 12: 90})  # 11 exited: its last sample stands
    cpu.observe({10: 550})  # a sample never lowers a pid's maximum
    assert cpu.ticks() == 60 + 30 + 90
    assert cpu.processes == 3
    assert cpu.percent(2.0, ticks_per_s=100) == 90.0
    assert cpu.percent(0.0) == 0.0


def test_no_running_backend_of_a_database_that_does_not_exist() -> None:
    assert backend_ticks("no_such_database_4f1c") == {}
