"""Fetching and caching the Apache Kafka broker classpath, without Docker.

The broker is not downloaded as a tarball: Maven resolves ``org.apache.kafka:kafka_2.13``
and its runtime dependencies from Maven Central (``deploy/kafka/pom.xml``) into
``<cache>/<version>/lib``. A marker file is written only once the copy is complete,
so an interrupted fetch is retried, and a complete one never touches the network again.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import StackError
from pipeline.private_files import private_dir

log = logging.getLogger(__name__)

#: Folder of the Maven project and the broker's logging config, in a source checkout.
DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kafka"
POM_FILE = DEPLOY_DIR / "pom.xml"
LOG4J_FILE = DEPLOY_DIR / "log4j2.properties"
#: Environment variable naming a classpath cache shared by several state folders (CI, tests).
DIST_CACHE_ENV = "O2O_KAFKA_DIST_CACHE"
MIN_JAVA = 17
FETCH_TIMEOUT_S = 900.0
_MARKER = "COMPLETE"
_VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.\-_]*$")

Progress = Callable[[str], None]


def java_binary() -> str:
    """Path of ``java`` on PATH, after checking it is a Java 17+ runtime.

    Raises:
        StackError: ``java`` is missing, broken or too old for Kafka 4.
    """
    java = shutil.which("java")
    if java is None:
        raise StackError(
            "java is not installed (or not on PATH); the local Kafka broker needs a Java "
            f"{MIN_JAVA}+ runtime: e.g. `apt-get install openjdk-17-jre-headless` or "
            "`brew install openjdk@17`"
        )
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"`{java} -version` failed: {exc}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if match is None:
        log.warning("could not read the Java version from %r", (done.stderr or done.stdout)[:200])
        return java
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_402" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise StackError(
            f"{java} is Java {major}; Apache Kafka 4 needs Java {MIN_JAVA} or newer: "
            "install e.g. `openjdk-17-jre-headless` and put it first on PATH"
        )
    return java


def maven_binary() -> str:
    """Path of ``mvn`` on PATH.

    Raises:
        StackError: Maven is not installed.
    """
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            "mvn (Apache Maven) is not installed (or not on PATH); it fetches the Kafka broker "
            "from Maven Central the first time: e.g. `apt-get install maven` or `brew install maven`"
        )
    return mvn


def default_dist_cache(state_dir: Path) -> Path:
    """The classpath cache: ``$O2O_KAFKA_DIST_CACHE`` when set, else ``<state_dir>/kafka/dist``."""
    shared = os.environ.get(DIST_CACHE_ENV)
    if shared:
        return Path(shared).expanduser().resolve()
    return state_dir / "kafka" / "dist"


def cached_lib(cache: Path, version: str) -> Path | None:
    """The complete cached classpath folder of ``version``, or None when it must be fetched."""
    folder = cache / version
    if (folder / _MARKER).is_file() and any((folder / "lib").glob("kafka_2.13-*.jar")):
        return folder / "lib"
    return None


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (several runs may share one cache)."""
    private_dir(path.parent)  # under the state folder, which is the owner's
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tail(text: str, lines: int = 25) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # Maven colours its output even with -B
    return "\n".join(line for line in text.strip().splitlines()[-lines:] if line.strip())


def ensure_dist(cache: Path, version: str, progress: Progress | None = None) -> Path:
    """Return ``<cache>/<version>/lib``, fetching it from Maven Central when not cached yet.

    Raises:
        StackError: Maven is missing, the pom is missing, or the fetch failed.
    """
    if not _VERSION_RE.match(version):
        raise StackError(f"{version!r} is not a Kafka version (set O2O_KAFKA_VERSION, e.g. 4.4.0)")
    lib = cached_lib(cache, version)
    if lib is not None:
        return lib
    with file_lock(cache / f"{version}.lock"):
        lib = cached_lib(cache, version)  # another process may have fetched it meanwhile
        if lib is not None:
            return lib
        mvn = maven_binary()
        if not POM_FILE.is_file():
            raise StackError(f"{POM_FILE} is missing; `o2o stack` must run from a source checkout")
        folder = cache / version
        partial = folder / "lib.partial"
        shutil.rmtree(folder, ignore_errors=True)
        private_dir(partial)
        if progress is not None:
            progress(f"fetching Apache Kafka {version} from Maven Central (first run only)")
        log.info("fetching Kafka %s into %s", version, folder)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-U",  # retry artifacts whose earlier download failed (Maven caches failures)
            "-Dstyle.color=never",
            "-f",
            str(POM_FILE),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={partial}",
            f"-Dkafka.version={version}",
        ]
        hint = (
            "is Maven Central (https://repo.maven.apache.org) reachable from here (network, proxy "
            f"in ~/.m2/settings.xml)? Does Kafka {version} exist (O2O_KAFKA_VERSION)?"
        )
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise StackError(
                f"fetching Kafka {version} timed out after {FETCH_TIMEOUT_S:.0f} s; {hint}"
            ) from exc
        except OSError as exc:
            raise StackError(f"could not run {mvn}: {exc}") from exc
        if done.returncode != 0 or not any(partial.glob("kafka_2.13-*.jar")):
            output = _tail(done.stdout + "\n" + done.stderr) or "(no output)"
            raise StackError(
                f"fetching Kafka {version} with Maven failed (exit {done.returncode}); {hint}\n{output}"
            )
        partial.rename(folder / "lib")
        (folder / _MARKER).write_text(f"kafka {version}\n")
        log.info("Kafka %s classpath cached in %s", version, folder / "lib")
        return folder / "lib"
