"""A local multi-replica topology: HAProxy in front of N ``shoprank serve`` replicas, one
Redis, the Kafka-protocol broker and the event consumers, all on 127.0.0.1.

``shoprank cluster up`` starts it and returns once every piece answers;
``shoprank cluster down`` stops it; ``shoprank cluster status`` says what runs.
The pieces map one to one onto a production deployment (docs/deploy.md):

- load balancer: HAProxy, checking ``/readyz`` (Kubernetes: a Service or Ingress);
- API replicas: ``shoprank serve --port P`` (a Deployment with N replicas);
- shared online state: one ``redis-server`` holding the features, the cross-encoder
  scores and the API keys' rate-limit buckets (a managed Redis or a StatefulSet);
- events: Tansu, a Kafka-protocol broker (your Kafka cluster);
- event log and streaming features: ``shoprank consume sink|features`` (a Deployment
  per consumer group);
- artifacts: the artifact home, one folder (a ReadWriteMany volume, or an artifact
  store URL, see :mod:`core.artifacts`).

Every replica reads the same artifact home: the index (built once here, before
any replica starts, so replicas only load it), the model registry's active
pointers and the experiment file, which each replica polls every
``serving.reload_poll_s``; a swap through any replica reaches all of them.
Each replica claims its own event spool slot, so no accepted event is shared
or lost when one dies. The state of a running topology (process ids and start
times, ports) is kept in ``<home>/cluster/state.json``. A process id there counts
as its piece only while the process that holds it started when the piece did:
after a crash or a reboot another process may hold the id, and it is never
signalled. A state file without start times (an older ShopRank's) cannot tell
its pieces from such a process: none of them is signalled, and ``down`` says so.
``up`` and ``down`` each hold ``<home>/cluster/.lock`` throughout: a ``down`` while an ``up``
starts the pieces is refused, rather than stopping pieces ``up`` goes on to report as running.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from api.stores import other_stores
from core.errors import Conflict, InvalidInput, NotReady
from core.processes import alive, same_process, start_time
from core.settings import Settings
from online_learning.events import topics
from online_learning.local_broker import create_topics, free_port, tansu_binary
from serving.indexing import build_index_in_child, check_catalog_to_build
from shoprank.layout import Layout, Piece, haproxy_config, port_free, wait_port, wait_ready

logger = logging.getLogger(__name__)

MAX_REPLICAS = 16


class Topology:
    """Start, inspect, break and stop the local topology of one artifact home.

    It serves every store of the home, so its settings are the default store's whatever store the command
    named (``SHOPRANK_STORE``, ``--store``): the index built before the replicas start is the default store's,
    and so is the one whose catalog is checked first."""

    def __init__(self, settings: Settings, replicas: int = 2, port: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        if not 1 <= replicas <= MAX_REPLICAS:
            raise InvalidInput(f"replicas={replicas} is out of range; pass 1..{MAX_REPLICAS}")
        if port is not None and not 1 <= port <= 65535:
            raise InvalidInput(f"port={port} is not a TCP port: pass 1..65535 (or leave it out: api.port)")
        self.settings = settings.for_store(None)
        self.home = settings.home.resolve()
        self.folder = self.home / "cluster"
        self.extra_env = dict(env or {})
        self.layout = Layout(port or settings.api.port, [free_port() for _ in range(replicas)], free_port(),
                             free_port())
        self._processes: dict[str, subprocess.Popen] = {}
        self._locked = False  # this object holds the home's cluster lock (:meth:`_alone`)
        self._stores: list[str | None] | None = None
        self._feature_stores: list[str | None] | None = None

    # -- state ----------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.folder / "state.json"

    @classmethod
    def attach(cls, settings: Settings) -> Topology:
        """The running topology of ``settings.home`` (from its state file)."""
        state = settings.home.resolve() / "cluster" / "state.json"
        if not state.is_file():
            raise NotReady(f"no topology runs from {settings.home}: start one with `shoprank cluster up`")
        topology = cls.__new__(cls)
        topology.settings = settings.for_store(None)
        topology.home = settings.home.resolve()
        topology.folder = topology.home / "cluster"
        topology.extra_env = {}
        try:
            topology.layout = Layout.from_json(json.loads(state.read_text()))
        except (ValueError, KeyError, TypeError) as error:  # cut short (a full disk), or edited by hand
            raise InvalidInput(f"{state} is not a topology's state ({type(error).__name__}: {error}): once no piece "
                               "of it runs (`ps`), move it away; then `shoprank cluster up` starts anew") from None
        topology._processes = {}
        topology._locked = False
        topology._stores = topology._feature_stores = None
        return topology

    @contextmanager
    def _alone(self) -> Iterator[None]:
        """Hold ``<home>/cluster/.lock`` for all of an ``up`` or a ``down``, without waiting: a ``down`` from another
        terminal while ``up`` starts the pieces would stop those started, and ``up`` then go on as if they ran.

        Raises:
            Conflict: another process holds it (an ``up`` under way, or a ``down``).
        """
        if self._locked:  # `up` stopping what it started: the lock is this object's already
            yield
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = self.folder / ".lock"
        handle = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Conflict(f"a `shoprank cluster up` is in progress from {self.home} (or a `cluster down`; it "
                               f"holds {lock}): wait for it to end, then run this again") from None
            self._locked = True
            try:
                yield
            finally:
                self._locked = False
                fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            os.close(handle)

    def _save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.layout.to_json(), indent=2))
        os.replace(tmp, self.state_file)

    def env(self) -> dict[str, str]:
        """The environment every ShopRank process of the topology gets."""
        env = {**os.environ, "SHOPRANK_HOME": str(self.home), "SHOPRANK_PROGRESS": "false",
               "SHOPRANK_LOG_LEVEL": self.settings.log_level,  # `--log-level`: the replicas and consumers too
               "SHOPRANK_EVENTS__KAFKA_BOOTSTRAP": self.layout.bootstrap,
               "SHOPRANK_FEATURES__REDIS_URL": self.layout.redis_url, "HF_HUB_OFFLINE": "1",
               # cross-encoder scores shared by every replica (database 1; Feast's features in 0)
               "SHOPRANK_SERVING__SCORE_STORE": "redis",
               "SHOPRANK_SERVING__SCORE_STORE_URL": f"redis://{self.layout.redis_url}/1",
               # with a rate limit set, one bucket per key across the replicas (database 2)
               "SHOPRANK_API__RATE_LIMIT_STORE": "redis",
               "SHOPRANK_API__RATE_LIMIT_URL": f"redis://{self.layout.redis_url}/2",
               # `cluster up` warned of the variables that name no setting: its pieces do not say it again
               "SHOPRANK_STARTED_BY": "cluster"}
        env.pop("SHOPRANK_STORE", None)  # each piece names its store itself (--store); the replicas serve them all
        if self.features_ready():
            env["SHOPRANK_FEATURES__ONLINE_STORE"] = "redis"
        # the replicas share this machine's cores, as the workers of one server do (unless set)
        env.setdefault("SHOPRANK_RANKING__THREADS", str(self.settings.ranking.threads_per_process(len(self.layout.replicas))))
        return {**env, **self.extra_env}

    def features_ready(self) -> bool:
        """Feature tables were built for some store (`shoprank [--store NAME] features build`): the cluster
        serves every store's features from Redis."""
        return bool(self.feature_stores())

    def feature_stores(self) -> list[str | None]:
        """The stores (None: the default one) that have feature tables: each is loaded into Redis. Worked out
        once (:meth:`up` works it out again at its start), so every piece is told the same."""
        if self._feature_stores is None:
            self._feature_stores = [store for store in self.stores()
                                    if any(self.features_folder(store).glob("*.parquet"))]
        return self._feature_stores

    def features_folder(self, store: str | None) -> Path:
        """Where ``store`` (None: the default store) keeps its feature tables."""
        return self.settings.for_store(store).paths.features

    # -- pieces -----------------------------------------------------------------------------

    def _spawn(self, piece: Piece) -> subprocess.Popen:
        self.folder.mkdir(parents=True, exist_ok=True)
        log = (self.folder / f"{piece.name}.log").open("ab")
        process = subprocess.Popen(piece.argv, env={**self.env(), **piece.env}, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        piece.pid, piece.started = process.pid, start_time(process.pid)
        self.layout.pieces[piece.name] = piece
        self._processes[piece.name] = process
        self._save()
        logger.info("started %s (pid %d%s)", piece.name, process.pid, f", port {piece.port}" if piece.port else "")
        return process

    def runs(self, name: str) -> bool | None:
        """Whether piece ``name`` runs: True; False when it stopped (its process id may now be another
        process's); None when its process id runs but nothing tells it is the piece (a state file without
        start times), so it must not be signalled."""
        piece = self.layout.pieces.get(name)
        if piece is None:
            return False
        process = self._processes.get(name)
        if process is not None:  # started by this object: the id stays the piece's until it is reaped here
            return process.poll() is None
        return same_process(piece.pid, piece.started)

    def _unverified(self, name: str) -> str:
        pid = self.layout.pieces[name].pid
        return (f"process {pid} runs, but {self.state_file} names no start time for {name} (written by an older "
                f"ShopRank, or this system tells none), so nothing tells it is {name} rather than another process "
                f"that took its id; it is left alone: stop it yourself if it is {name} (kill -TERM -{pid})")

    def start_redis(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise NotReady("redis-server is not installed (Debian: apt-get install redis-server; `make test` does it)")
        port = self.layout.redis_port
        data = self.folder / "redis"
        data.mkdir(parents=True, exist_ok=True)
        # append-only file: a restarted Redis comes back with the features and scores it held
        process = self._spawn(Piece("redis", [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                              "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(data),
                                              "--protected-mode", "yes"], port))
        wait_port(port, process, 20, "redis-server")

    def start_broker(self) -> None:
        port = self.layout.broker_port
        url = f"tcp://127.0.0.1:{port}"
        process = self._spawn(Piece("broker", [str(tansu_binary()), "broker", "--listener-url", url,
                                               "--advertised-listener-url", url, "--storage-engine",
                                               "memory://tansu/"], port))
        wait_port(port, process, 20, "the Kafka-protocol broker (tansu)")
        create_topics(self.layout.bootstrap, [t for store in self.stores() for t in topics(store)])

    def stores(self) -> list[str | None]:
        """The default store (None) and every other store of the home: each has its topics and log sink.
        Listed once, as :meth:`feature_stores` (a folder under stores/ that is no store is warned of once, not
        for every piece started)."""
        if self._stores is None:
            self._stores = [None, *other_stores(self.settings)]
        return self._stores

    def start_consumer(self, kind: str, store: str | None = None) -> None:
        name, scope = (f"consumer-{kind}", []) if store is None else (f"consumer-{kind}-{store}", ["--store", store])
        self._spawn(Piece(name, [sys.executable, "-m", "shoprank.cli", *scope, "consume", kind, "--bootstrap",
                                 self.layout.bootstrap]))

    def start_replica(self, i: int, wait: bool = True) -> None:
        port = self.layout.replicas[i]
        process = self._spawn(Piece(f"replica-{i}", [sys.executable, "-m", "shoprank.cli", "serve", "--host",
                                                     "127.0.0.1", "--port", str(port), "--workers", "1"], port))
        if wait:
            self.wait_replica(i, process)

    def wait_replica(self, i: int, process: subprocess.Popen | None = None, seconds: float = 300) -> None:
        wait_ready(self.layout.replica_url(i), seconds, process,
                   f"replica {i} (log: {self.folder / f'replica-{i}.log'})")

    def start_haproxy(self) -> None:
        binary = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").is_file() else None)
        if binary is None:
            raise NotReady("haproxy is not installed (Debian: apt-get install haproxy; `make test` does it)")
        config = self.folder / "haproxy.cfg"
        self.folder.mkdir(parents=True, exist_ok=True)
        config.write_text(haproxy_config(self.layout))
        check = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise Conflict(f"haproxy rejected {config}: {check.stdout}{check.stderr}")
        self._check_port()  # again: taken while the replicas started
        process = self._spawn(Piece("haproxy", [binary, "-db", "-f", str(config)], self.layout.port))
        wait_port(self.layout.port, process, 20, "haproxy")
        time.sleep(0.2)
        if process.poll() is not None:
            raise NotReady(f"haproxy exited with code {process.returncode} after it started; see "
                           f"{self.folder / 'haproxy.log'}")

    def _check_port(self) -> None:
        if not port_free(self.layout.port):  # else another server's answers would pass for HAProxy's
            raise Conflict(f"port {self.layout.port} on 127.0.0.1 is in use, so HAProxy cannot listen on it: stop "
                           "what listens there (a `make run`?), or give the topology another port (--port)")

    # -- the whole topology -------------------------------------------------------------------

    def up(self) -> dict[str, object]:
        """Start every piece (Redis, broker, consumers, the index once, replicas, HAProxy); a catalog file
        that is not there, when the index is to be built from it, is refused before anything starts. A
        ``down`` meanwhile is refused (:meth:`_alone`)."""
        check_catalog_to_build(self.settings)
        with self._alone():
            return self._up()

    def _up(self) -> dict[str, object]:
        self._stores = self._feature_stores = None  # the home's stores as they are now, for every piece
        if self.state_file.is_file():
            running = Topology.attach(self.settings)
            runs = {name: running.runs(name) for name in running.layout.pieces}
            if any(runs.values()):
                raise Conflict(f"a topology already runs from {self.home}; `shoprank cluster down` first")
            unverified = {name: running.layout.pieces[name].pid for name, state in runs.items() if state is None}
            if unverified:
                raise Conflict(f"{self.state_file} names pieces whose process ids run, {unverified}, without their "
                               "start times (an older ShopRank wrote it), so nothing tells they are the pieces "
                               "rather than processes that took their ids: stop those that are yourself (kill -TERM "
                               "-PID), then `shoprank cluster down` forgets them all without signalling any")
        self._check_port()  # before any piece starts (and the index builds), not once they all have
        started = time.monotonic()
        try:
            self.start_redis()
            self.start_broker()
            for store in self.feature_stores():
                self._load_features(store)
            for store in self.stores():
                self.start_consumer("sink", store)
                if (self.features_folder(store) / "product_attributes.parquet").is_file():
                    self.start_consumer("features", store)  # its tables name each product's category and price
            self._build_index()
            for i in range(len(self.layout.replicas)):
                self.start_replica(i, wait=False)
            for i in range(len(self.layout.replicas)):
                self.wait_replica(i, self._processes[f"replica-{i}"])
            self.start_haproxy()
            self.wait_balanced()
        except BaseException:
            self.down()
            raise
        return {**self.status(), "seconds": round(time.monotonic() - started, 1)}

    def _load_features(self, store: str | None = None) -> None:
        """Register one store's feature definitions against Redis and load it (feast apply + materialize; each
        store is its own Feast project there). None: the default store."""
        scope = [] if store is None else ["--store", store]
        for verb in ("apply", "materialize"):
            done = subprocess.run([sys.executable, "-m", "shoprank.cli", *scope, "features", verb, "--online-store",
                                   "redis"], env=self.env(), check=False, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
            said = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
            sys.stderr.write("".join(line + "\n" for line in done.stderr.splitlines() if line not in said))
            if done.returncode != 0:
                why = said[-1].removeprefix("error: ") if said else f"exit code {done.returncode}; its output is above"
                command = " ".join(["shoprank", *scope, "features", verb, "--online-store", "redis"])
                raise NotReady(f"`{command}` failed: {why}")

    def _build_index(self) -> None:
        """Build the served index once, so replicas only load it."""
        build_index_in_child(self.env())

    def wait_balanced(self, seconds: float = 30) -> None:
        """Until HAProxy answers ``/readyz`` (at least one replica passed its health check)."""
        wait_ready(self.layout.base_url, seconds, what=f"haproxy on {self.layout.base_url} (a ready replica)",
                   poll=0.2)

    def stop(self, name: str, sig: int = signal.SIGTERM, seconds: float = 20) -> None:
        """Stop one piece (``sig``: SIGTERM for a clean stop, SIGKILL for a crash)."""
        piece = self.layout.pieces.get(name)
        runs = self.runs(name)
        if runs is None:
            logger.warning("not stopping %s: %s", name, self._unverified(name))
        if piece is None or not runs:
            return
        try:
            os.killpg(piece.pid, sig)  # type: ignore[arg-type]
        except ProcessLookupError:
            return
        process = self._processes.get(name)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                break
            if process is None and not alive(piece.pid):
                break
            time.sleep(0.05)
        else:
            if self.runs(name):
                os.killpg(piece.pid, signal.SIGKILL)  # type: ignore[arg-type]
            if process is not None:
                process.wait(5)
        logger.info("stopped %s (pid %s)", name, piece.pid)

    def restart(self, name: str, wait: bool = True) -> None:
        """Start a stopped piece again, same command and port (a crashed replica rejoins)."""
        piece = self.layout.pieces.get(name)
        if piece is None:
            raise InvalidInput(f"no piece {name!r}; pieces: {sorted(self.layout.pieces)}")
        runs = self.runs(name)
        if runs is None:
            raise Conflict(self._unverified(name))
        if runs:
            raise Conflict(f"{name} still runs (pid {piece.pid}); stop it first")
        process = self._spawn(Piece(piece.name, piece.argv, piece.port, env=piece.env))
        if wait and name.startswith("replica-"):
            self.wait_replica(int(name.split("-")[1]), process)
        elif wait and piece.port:
            wait_port(piece.port, process, 20, name)

    def down(self) -> dict[str, object]:
        """Stop every piece, the load balancer first and the stores last; a process whose id the state file
        names but that cannot be told to be its piece is named under ``not_signalled``, never stopped. Refused
        while an ``up`` is under way (:meth:`_alone`)."""
        with self._alone():
            return self._down()

    def _down(self) -> dict[str, object]:
        order = ["haproxy", *sorted(n for n in self.layout.pieces if n.startswith("replica-")),
                 *sorted(n for n in self.layout.pieces if n.startswith("consumer-")), "broker", "redis"]
        stopped, unverified = [], {}
        for name in order:
            if name in self.layout.pieces:
                runs = self.runs(name)
                if runs is None:
                    unverified[name] = self._unverified(name)
                    logger.warning("not stopping %s: %s", name, unverified[name])
                elif runs:
                    self.stop(name)
                    stopped.append(name)
        if self.state_file.is_file():
            self.state_file.unlink()
        return {"stopped": stopped, **({"not_signalled": unverified} if unverified else {})}

    def status(self) -> dict[str, object]:
        """Each piece: pid, port, alive (None, with a ``note``, when its process id runs but cannot be told to
        be the piece); each replica: ready and its served versions."""
        pieces: dict[str, object] = {}
        for name, piece in self.layout.pieces.items():
            entry: dict[str, object] = {"pid": piece.pid, "port": piece.port, "alive": self.runs(name)}
            if entry["alive"] is None:
                entry["note"] = self._unverified(name)
            if name.startswith("replica-") and entry["alive"] is True:
                try:
                    ready = httpx.get(f"http://127.0.0.1:{piece.port}/readyz", timeout=2)
                    entry["ready"] = ready.status_code == 200
                    entry["versions"] = ready.json().get("versions")
                except httpx.HTTPError as err:
                    entry["ready"] = False
                    entry["error"] = type(err).__name__
            pieces[name] = entry
        return {"url": self.layout.base_url, "redis": self.layout.redis_url, "kafka": self.layout.bootstrap,
                "home": str(self.home), "pieces": pieces}
