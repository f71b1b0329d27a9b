"""Every server a local Dask cluster starts (scheduler, its HTTP server with or without a dashboard,
nannies, workers) listens on loopback only, unless the user names an address."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("distributed")
psutil = pytest.importorskip("psutil")


def _listening() -> list[tuple[int, str, int]]:
    """(pid, ip, port) of every listening inet socket of this process and its descendants."""
    me = psutil.Process()
    out = []
    for proc in [me, *me.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        out += [(proc.pid, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("dashboard", ["", "0", ":0"])
def test_every_server_of_a_local_cluster_binds_to_loopback(dashboard, monkeypatch):
    from bench.engines.cluster import local_cluster

    monkeypatch.setenv("BENCH_SIMULATE_GPU", "1")
    before = set(_listening())
    with local_cluster(("cpu", "cuda:0"), 1, job_threads=1, dashboard=dashboard) as cluster:
        deadline = time.monotonic() + 60
        while len(cluster.scheduler_info.get("workers", {})) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        opened = [s for s in _listening() if s not in before]
        http = cluster.scheduler.http_server
        http_ips = {sock.getsockname()[0] for sock in http._sockets.values()}
    # scheduler (comm + HTTP) and, per worker, a nanny and a worker: at least 6 servers
    assert len(opened) >= 6, opened
    assert all(ip == "127.0.0.1" for _, ip, _ in opened), opened
    assert http_ips == {"127.0.0.1"}, http_ips


def test_a_dashboard_address_without_a_host_is_loopback():
    from bench.engines.cluster import dashboard_address

    assert dashboard_address("") is None
    assert dashboard_address("8787") == "127.0.0.1:8787"
    assert dashboard_address(":8787") == "127.0.0.1:8787"
    assert dashboard_address("0.0.0.0:8787") == "0.0.0.0:8787"  # named: the user's choice
