"""A local cluster listens on loopback only: scheduler, workers, nannies and the dashboard.

The clusters are started the way every command starts them (``faket_dask.connect`` with its
default dashboard address), and the listening TCP sockets of this process and of its worker
children are read with psutil. ``FAKET_DASHBOARD_ADDRESS`` (``faket_dask.cluster``) is the one
way to listen elsewhere; it is unset here so that the default is what is tested.
"""
from __future__ import annotations

from urllib.parse import urlparse

import psutil
import pytest

import faket_dask as fd
from faket_dask.cluster import DASHBOARD_ENV, dashboard_address

LOOPBACK = {"127.0.0.1", "::1"}


def listening(proc: psutil.Process) -> list[tuple[int, str, int]]:
    """``(pid, ip, port)`` of every TCP socket ``proc`` and its children listen on."""
    out = []
    for p in [proc, *proc.children(recursive=True)]:
        try:
            conns = p.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        out += [(p.pid, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return out


@pytest.fixture
def no_dashboard_env(monkeypatch):
    monkeypatch.delenv(DASHBOARD_ENV, raising=False)


@pytest.mark.parametrize("processes", [True, False], ids=["worker-processes", "in-process"])
def test_local_cluster_listens_on_loopback_only(no_dashboard_env, processes, capsys):
    me = psutil.Process()
    before = {(ip, port) for _, ip, port in listening(me)}
    with fd.connect(workers=1, threads_per_worker=1, processes=processes) as client:
        socks = [s for s in listening(me) if (s[1], s[2]) not in before]
        # the URL printed is the one the dashboard answers on
        printed = capsys.readouterr().err.split("Dask dashboard: ", 1)[1].split()[0]
        assert urlparse(printed).hostname == "127.0.0.1", printed
        dash_port = urlparse(printed).port
        if processes:
            workers = client.scheduler_info()["workers"]
            assert len(workers) == 1
            assert len(me.children(recursive=True)) >= 1  # the worker's (nanny's) process
    assert socks, "no listening socket found: the test would pass vacuously"
    assert ("127.0.0.1", dash_port) in {(ip, port) for _, ip, port in socks}  # the dashboard's
    exposed = [s for s in socks if s[1] not in LOOPBACK]
    assert not exposed, f"listening beyond loopback (pid, ip, port): {exposed}"


def test_dashboard_address_rules(monkeypatch):
    monkeypatch.delenv(DASHBOARD_ENV, raising=False)
    assert dashboard_address() == "127.0.0.1:8787"
    assert dashboard_address(":0") == "127.0.0.1:0"
    assert dashboard_address("8790") == "127.0.0.1:8790"
    assert dashboard_address("0.0.0.0:8787") == "0.0.0.0:8787"  # asked for explicitly
    assert dashboard_address(None) is None
    monkeypatch.setenv(DASHBOARD_ENV, "0.0.0.0:9000")
    assert dashboard_address() == "0.0.0.0:9000"
    assert dashboard_address(":0") == "127.0.0.1:0"  # an explicit argument wins over the env
    monkeypatch.setenv(DASHBOARD_ENV, ":9001")
    assert dashboard_address() == "127.0.0.1:9001"
    monkeypatch.setenv(DASHBOARD_ENV, "none")
    assert dashboard_address() is None
