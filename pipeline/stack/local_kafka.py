"""A single-node Apache Kafka broker (KRaft) run as a plain Java process, no Docker.

Everything lives under ``<state_dir>/kafka``::

    dist/<version>/lib/   broker classpath fetched once by Maven (see kafka_dist)
    server.properties     written at every start from the settings
    data/                 log.dirs (topics, offsets, the KRaft metadata log)
    logs/                 server.log (log4j2) and broker.out (the JVM's stdout/stderr)
    broker.pid            pid of the running broker (its own process group)
"""

from __future__ import annotations

import base64
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from pipeline.config import Settings
from pipeline.errors import StackError
from pipeline.private_files import private_dir
from pipeline.stack.kafka_dist import (
    LOG4J_FILE,
    Progress,
    default_dist_cache,
    ensure_dist,
    file_lock,
    java_binary,
)
from pipeline.stack.kafka_net import HOST, accepts, free_port, port_is_free, topic_count
from pipeline.stack.secure_listener import (
    LISTENER,
    USER,
    create_scram_user,
    ensure_secure_files,
    jvm_properties,
    listener_properties,
    write_client_env,
)

log = logging.getLogger(__name__)

__all__ = ["LocalKafka", "StackStatus", "free_port"]

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
#: Broker processes started by this interpreter, kept so they are reaped (no zombies, no ResourceWarning).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class StackStatus:
    """What ``o2o stack status`` reports about the local broker."""

    running: bool
    pid: int | None
    bootstrap: str
    version: str
    data_dir: Path
    log_file: Path
    topics: int | None = None
    """Number of topics (internal ``__*`` ones excluded) when the broker answers, else None."""
    secure_bootstrap: str | None = None
    """The SASL_SSL listener (``up --secure``), when the broker has one."""

    @property
    def ready(self) -> bool:
        """True when the broker runs and answered a metadata request."""
        return self.running and self.topics is not None


def _new_cluster_id() -> str:
    """A KRaft cluster id: base64url of 16 random bytes, no padding (Kafka's ``Uuid`` format)."""
    while True:
        value = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        if not value.startswith("-"):  # Kafka avoids ids that look like a command-line flag
            return value


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _tail(path: Path, start: int = 0, lines: int = 30) -> str:
    """The last ``lines`` lines of ``path`` written after byte ``start``."""
    try:
        with path.open("rb") as fh:
            fh.seek(start)
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


class LocalKafka:
    """The local broker of one state folder: ``up``, ``status`` and ``down``.

    Args:
        settings: uses ``state_dir``, ``kafka_version``, ``kafka_port``, ``kafka_controller_port``
            and ``kafka_heap``.
        dist_cache: folder caching the broker classpath per version; default
            ``$O2O_KAFKA_DIST_CACHE`` when set, else ``<state_dir>/kafka/dist``.
        start_timeout: seconds ``up`` waits for the broker to answer.
        overrides: server properties that replace or add to the generated ones (a deployment's
            broker settings tried on this machine); ``up`` still waits for a plain-text listener
            on ``kafka_port``.
    """

    def __init__(
        self,
        settings: Settings,
        dist_cache: Path | None = None,
        start_timeout: float = START_TIMEOUT_S,
        overrides: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.overrides = dict(overrides or {})
        self.root = settings.state_dir / "kafka"
        self.dist_cache = (
            dist_cache.resolve() if dist_cache is not None else default_dist_cache(settings.state_dir)
        )
        self.data_dir = self.root / "data"
        self.logs_dir = self.root / "logs"
        self.properties_file = self.root / "server.properties"
        self.pid_file = self.root / "broker.pid"
        self.out_file = self.logs_dir / "broker.out"
        self.log_file = self.logs_dir / "server.log"
        self.start_timeout = start_timeout
        self._log_offsets: dict[Path, int] = {}

    # ----------------------------------------------------------------- public API

    def up(self, progress: Progress | None = None, secure: bool = False) -> StackStatus:
        """Start the broker unless it already runs, and wait until it answers metadata requests.

        Idempotent: when the broker of this state folder runs and answers, returns at once.
        The first call fetches the broker classpath (Maven); later calls need no network.
        With ``secure``, the broker also listens with SASL_SSL on ``kafka_secure_port``
        (:mod:`pipeline.stack.secure_listener`): certificates and the SCRAM user are made
        once, and ``<state_dir>/kafka/secure/client.env`` holds the client settings.

        Raises:
            StackError: a tool is missing, the fetch failed, a port is taken, the broker
                runs on other ports than the settings say, or it did not start in time.
        """
        say = progress or (lambda message: None)
        with file_lock(self.root / "up.lock"):  # two `up` at once start one broker
            pid = self._running_pid()
            if pid is None:
                pid = self._start(say, secure)
            else:
                self._check_ports(pid)
                if secure and self._recorded_secure_port() is None:
                    raise StackError(
                        f"the broker of {self.settings.state_dir} is running (pid {pid}) without its "
                        "secure listener; run `o2o stack down` first, then `o2o stack up --secure`"
                    )
                say(f"broker already running (pid {pid}), checking it answers")
            status = self._wait_ready(pid, say)
            if status.secure_bootstrap is not None:
                files = ensure_secure_files(self.settings.state_dir)
                create_scram_user(status.bootstrap, files)
                host, _, port = status.secure_bootstrap.rpartition(":")
                env = write_client_env(files, host, int(port))
                say(f"SASL_SSL listener on {status.secure_bootstrap} (user {USER}); client settings in {env}")
        return status

    def _check_ports(self, pid: int) -> None:
        """Refuse when the running broker listens on other ports than the settings say."""
        port, cport = self.settings.kafka_port, self.settings.kafka_controller_port
        running = self._recorded_ports()
        if running is not None and running != (port, cport):
            raise StackError(
                f"the broker of {self.settings.state_dir} is already running (pid {pid}) on port "
                f"{running[0]} (controller {running[1]}), not on port {port} (controller {cport}); "
                f"set O2O_KAFKA_PORT={running[0]} O2O_KAFKA_CONTROLLER_PORT={running[1]} "
                "or run `o2o stack down` first"
            )

    def _start(self, say: Progress, secure: bool) -> int:
        """Fetch (once), check the ports, write the config, format (once) and spawn the broker."""
        port, cport = self.settings.kafka_port, self.settings.kafka_controller_port
        sport = self.settings.kafka_secure_port if secure else None
        if len({port, cport, sport or port}) < (3 if secure else 2):
            raise StackError(
                f"the broker, controller (and secure) ports must differ: {port}, {cport}"
                + (f", {sport}" if secure else "")
                + "; set O2O_KAFKA_CONTROLLER_PORT (O2O_KAFKA_SECURE_PORT)"
            )
        if sport is not None and not port_is_free(sport):
            raise StackError(f"port {sport} is taken by another process; set O2O_KAFKA_SECURE_PORT")
        java = java_binary()
        lib = ensure_dist(self.dist_cache, self.settings.kafka_version, say)
        if not port_is_free(port):
            raise StackError(f"port {port} is taken by another process; set O2O_KAFKA_PORT")
        if not port_is_free(cport):
            raise StackError(
                f"port {cport} is taken by another process; set O2O_KAFKA_PORT (or O2O_KAFKA_CONTROLLER_PORT)"
            )
        private_dir(self.root)
        private_dir(self.logs_dir)
        self._write_properties(port, cport, sport)
        classpath = f"{lib}/*"
        if not (self.data_dir / "meta.properties").exists():
            say("formatting the broker storage (first start)")
            self._format(java, classpath)
        say(f"starting Apache Kafka {self.settings.kafka_version} on {HOST}:{port}")
        return self._spawn(java, classpath, secure)

    def status(self) -> StackStatus:
        """The broker's state now; ``topics`` is set only when it answers within a few seconds."""
        pid = self._running_pid()
        ports = self._recorded_ports() if pid is not None else None
        port = ports[0] if ports is not None else self.settings.kafka_port
        bootstrap = f"{HOST}:{port}"
        topics = topic_count(bootstrap, timeout=5.0) if pid is not None and accepts(port) else None
        sport = self._recorded_secure_port() if pid is not None else None
        return StackStatus(
            running=pid is not None,
            pid=pid,
            bootstrap=bootstrap,
            version=self._running_version(pid) if pid is not None else self.settings.kafka_version,
            data_dir=self.data_dir,
            log_file=self.log_file,
            topics=topics,
            secure_bootstrap=f"{HOST}:{sport}" if sport is not None else None,
        )

    def down(self, purge: bool = False) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 30 s) and forget its pid. Idempotent.

        Args:
            purge: also delete the data (every topic and offset) and the logs; the cached
                classpath is kept.
        """
        pid = self._running_pid()
        if pid is not None:
            log.info("stopping the Kafka broker (pid %s)", pid)
            self._signal(pid, signal.SIGTERM)
            if not self._wait_exit(pid, STOP_TIMEOUT_S):
                log.warning("broker pid %s still running after %.0f s, killing it", pid, STOP_TIMEOUT_S)
                self._signal(pid, signal.SIGKILL)
                if not self._wait_exit(pid, 10.0):
                    raise StackError(f"could not stop the Kafka broker (pid {pid})")
        self.pid_file.unlink(missing_ok=True)
        if purge:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            shutil.rmtree(self.logs_dir, ignore_errors=True)
            log.info("purged %s and %s", self.data_dir, self.logs_dir)

    # ----------------------------------------------------------------- process

    def _is_our_broker(self, pid: int) -> bool:
        """True when ``pid`` is a live (non-zombie) broker started on this state folder."""
        child = _CHILDREN.get(pid)
        if child is not None:
            # Our own child: its exit status is the truth. (Reading its command
            # line right after the start can catch the JVM mid-launch.)
            if child.poll() is None:
                return True
            del _CHILDREN[pid]
            return False
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False
            cmdline = proc.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False
        return "kafka.Kafka" in cmdline and str(self.properties_file) in cmdline

    def _running_pid(self) -> int | None:
        """Pid of this state folder's running broker (pid file, else a process scan), or None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid and self._is_our_broker(pid):
            return pid
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmdline = proc.info.get("cmdline") or []
            if "kafka.Kafka" in cmdline and str(self.properties_file) in cmdline:
                found = int(proc.info["pid"])
                if self._is_our_broker(found):
                    self.pid_file.write_text(f"{found}\n")
                    return found
        if self.pid_file.exists():
            log.info("removing stale pid file %s", self.pid_file)
            self.pid_file.unlink(missing_ok=True)
        return None

    def _running_version(self, pid: int) -> str:
        try:
            cmdline = psutil.Process(pid).cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return self.settings.kafka_version
        for arg in cmdline:
            match = re.search(r"[/\\]([^/\\]+)[/\\]lib[/\\]\*$", arg)
            if match:
                return match.group(1)
        return self.settings.kafka_version

    def _signal(self, pid: int, sig: signal.Signals) -> None:
        try:
            if os.getpgid(pid) == pid:  # the broker leads its own process group (start_new_session)
                os.killpg(pid, sig)
            else:  # started by hand, not by `up`
                os.kill(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            raise StackError(f"not allowed to signal the Kafka broker (pid {pid}): {exc}") from exc

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._is_our_broker(pid):
                _CHILDREN.pop(pid, None)
                return True
            time.sleep(0.2)
        return False

    def _spawn(self, java: str, classpath: str, secure: bool) -> int:
        heap = self.settings.kafka_heap
        cmd = [
            java,
            f"-Xmx{heap}",
            f"-Xms{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            "-Dlog4j2.shutdownHookEnabled=false",  # keep logging while Kafka's own shutdown hook runs
            f"-Dkafka.logs.dir={self.logs_dir}",
        ]
        if LOG4J_FILE.is_file():
            cmd.append(f"-Dlog4j2.configurationFile={LOG4J_FILE}")
        if secure:
            cmd += jvm_properties(ensure_secure_files(self.settings.state_dir))
        cmd += ["-cp", classpath, "kafka.Kafka", str(self.properties_file)]
        log.info("starting Kafka: %s", " ".join(cmd))
        self._log_offsets = {path: _size(path) for path in (self.out_file, self.log_file)}
        with self.out_file.open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
            )
        _CHILDREN[proc.pid] = proc
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc.pid

    def _wait_ready(self, pid: int, say: Progress) -> StackStatus:
        """Wait until ``pid`` accepts connections and answers metadata; raise if it dies or hangs."""
        port = self.settings.kafka_port
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if not self._is_our_broker(pid):
                self.pid_file.unlink(missing_ok=True)
                raise StackError(
                    f"the Kafka broker exited during start-up; last lines of its logs:\n{self._logs()}"
                )
            if accepts(port) and topic_count(f"{HOST}:{port}", timeout=2.0) is not None:
                status = self.status()
                say(f"Kafka {status.version} ready on {status.bootstrap} (pid {pid})")
                return status
            time.sleep(0.25)
        raise StackError(
            f"the Kafka broker (pid {pid}) did not answer on {HOST}:{port} within "
            f"{self.start_timeout:.0f} s; it is left running (`o2o stack down` stops it); "
            f"last lines of its logs:\n{self._logs()}"
        )

    def _logs(self) -> str:
        parts = [
            f"--- {path}\n{text}"
            for path in (self.out_file, self.log_file)
            if (text := _tail(path, self._log_offsets.get(path, 0)))
        ]
        return "\n".join(parts) or "(no log output)"

    # ----------------------------------------------------------------- files

    def _recorded_ports(self) -> tuple[int, int] | None:
        """(broker, controller) ports of the written server.properties, or None."""
        try:
            text = self.properties_file.read_text()
        except OSError:
            return None
        broker = re.search(r"^listeners=.*PLAINTEXT://[^:,]+:(\d+)", text, re.M)
        controller = re.search(r"^listeners=.*CONTROLLER://[^:,]+:(\d+)", text, re.M)
        if broker is None or controller is None:
            return None
        return int(broker.group(1)), int(controller.group(1))

    def _recorded_secure_port(self) -> int | None:
        """The SASL_SSL port of the written server.properties, or None without one."""
        try:
            text = self.properties_file.read_text()
        except OSError:
            return None
        found = re.search(rf"^listeners=.*{LISTENER}://[^:,]+:(\d+)", text, re.M)
        return int(found.group(1)) if found else None

    def _write_properties(self, port: int, cport: int, sport: int | None) -> None:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{HOST}:{cport}",
            "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{cport}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "1000",  # O2O_GROUP_SESSION_TIMEOUT_SECONDS may go down to 1
            "log.retention.hours": "168",
        }
        if sport is not None:
            files = ensure_secure_files(self.settings.state_dir)
            props["listeners"] += f",{LISTENER}://{HOST}:{sport}"
            props["advertised.listeners"] += f",{LISTENER}://{HOST}:{sport}"
            props["listener.security.protocol.map"] += f",{LISTENER}:{LISTENER}"
            props |= listener_properties(files, sport, HOST)
        props |= self.overrides
        lines = [
            "# Written by `o2o stack up` (pipeline/stack/local_kafka.py) at every start; edits are lost."
        ]
        lines += [f"{key}={value}" for key, value in props.items()]
        tmp = self.properties_file.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(self.properties_file)

    def _format(self, java: str, classpath: str) -> None:
        cluster_id = _new_cluster_id()
        tool = ["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.properties_file)]
        cmd = [java, "-Xmx256m", "-cp", classpath, *tool]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StackError(f"formatting the Kafka storage failed: {exc}") from exc
        if done.returncode != 0:
            output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
            raise StackError(f"formatting the Kafka storage in {self.data_dir} failed:\n{output}")
        log.info("formatted %s (cluster id %s)", self.data_dir, cluster_id)
