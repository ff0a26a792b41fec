"""What a local topology is made of, and waiting for its pieces.

:class:`Layout` holds the ports and processes of one topology (``state.json``);
:func:`haproxy_config` writes the load balancer's configuration for it;
:func:`wait_port` and :func:`wait_ready` wait for a piece to listen or to be ready.
:mod:`shoprank.topology` starts and stops the pieces.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from core.errors import NotReady


@dataclass
class Piece:
    """One process of the topology; ``started`` is its start time (:func:`core.processes.start_time`), which
    tells it from an unrelated process that holds its id later (None in a state file of an older ShopRank)."""

    name: str
    argv: list[str]
    port: int | None = None
    pid: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    started: str | None = None


@dataclass
class Layout:
    """Ports and the pieces of one topology (what ``state.json`` holds)."""

    port: int
    replicas: list[int]
    redis_port: int
    broker_port: int
    pieces: dict[str, Piece] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def redis_url(self) -> str:
        return f"127.0.0.1:{self.redis_port}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    def replica_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.replicas[i]}"

    def to_json(self) -> dict[str, object]:
        return {"port": self.port, "replicas": self.replicas, "redis_port": self.redis_port,
                "broker_port": self.broker_port, "pieces": {k: asdict(v) for k, v in self.pieces.items()}}

    @classmethod
    def from_json(cls, data: dict) -> Layout:  # type: ignore[type-arg]
        """The layout a state file holds; a field missing or of another type (a file edited by hand) is a
        KeyError or TypeError naming it."""
        ports = {name: _typed(data[name], int, name) for name in ("port", "redis_port", "broker_port")}
        replicas = [_typed(port, int, "replicas") for port in _typed(data["replicas"], list, "replicas")]
        layout = cls(ports["port"], replicas, ports["redis_port"], ports["broker_port"])
        for name, fields in _typed(data["pieces"], dict, "pieces").items():
            piece = Piece(**_typed(fields, dict, f"pieces.{name}"))
            checks = [(piece.name, str, "name"), (piece.argv, list, "argv"), (piece.port, (int, type(None)), "port"),
                      (piece.pid, (int, type(None)), "pid"), (piece.env, dict, "env"),
                      (piece.started, (str, type(None)), "started")]
            for value, kind, field_name in checks:
                _typed(value, kind, f"pieces.{name}.{field_name}")
            for value, kind, field_name in [(a, str, "argv") for a in piece.argv] + [(v, str, "env")
                                                                                     for v in piece.env.values()]:
                _typed(value, kind, f"pieces.{name}.{field_name}")
            layout.pieces[name] = piece
        return layout


def _typed(value: Any, kind: type | tuple[type, ...], name: str) -> Any:
    """``value``, when of ``kind`` (a flag is not a number); else a TypeError naming the field."""
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise TypeError(f"{name} is {value!r}")
    return value


def haproxy_config(layout: Layout, check_interval_ms: int = 1000) -> str:
    """HAProxy in front of the replicas: health checks on ``/readyz`` (a loading or dead
    replica gets no traffic), least-connections balancing, and a failed connection, an
    empty answer from a dying replica or a 503 (not ready, overloaded) retried on another one
    (searches are safe to repeat; events carry ids that the log de-duplicates). An admin call
    (``/v1/admin``, ``/v1/stores/STORE/admin``) that reached a replica is never sent again: it
    changes shared state (a rollback repeated goes one version further back). A connection
    that was never made is still retried, as nothing was sent."""
    servers = "\n".join(f"    server replica{i} 127.0.0.1:{port} check inter {check_interval_ms} fall 2 rise 2"
                        for i, port in enumerate(layout.replicas))
    return f"""# written by `shoprank cluster up`; regenerated on every start
global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout 503
    # a request is sent on once its body is in (up to the buffer's 16 kB): HAProxy retries only what it holds
    # whole, and most clients send the body after the headers
    option http-buffer-request

frontend shoprank
    bind 127.0.0.1:{layout.port}
    # the path as the replica routes it (percent-decoded), in the default store or a named one
    acl admin path,url_dec -m reg ^/v1/(stores/[^/]+/)?admin(/|$)
    http-request disable-l7-retry if admin
    default_backend replicas

backend replicas
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
{servers}
"""


def port_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:``port`` (a listening socket could take it now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what a closed server left does not count
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_port(port: int, process: subprocess.Popen | None, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise NotReady(f"{what} exited with code {process.returncode} before listening on 127.0.0.1:{port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise NotReady(f"{what} did not listen on 127.0.0.1:{port} within {seconds:.0f}s")


def wait_ready(base: str, seconds: float, process: subprocess.Popen | None = None, what: str = "the API",
               poll: float = 0.3) -> None:
    """Until ``base/readyz`` answers 200; :class:`NotReady` naming ``what`` if ``process`` exits first
    or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise NotReady(f"{what} exited with code {process.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(poll)
    raise NotReady(f"{what} was not ready within {seconds:.0f}s")
