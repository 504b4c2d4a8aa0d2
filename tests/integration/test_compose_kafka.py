"""The SASL_SSL option of docker compose (deploy/compose-kafka-sasl-ssl.yml), its broker run on this machine.

No Docker engine runs here, so the containers themselves never start. What
the containers would do is done with the same inputs: the overlay's
`kafka-secrets` command runs as written; the broker's environment (the base
file's, then the overlay's) becomes server properties by the apache/kafka
image's rule (``KAFKA_`` dropped, ``_`` -> ``.``, ``__`` -> ``_``, ``___``
-> ``-``, lower case); the project's local broker starts with them, with
only the ports, the host name ``kafka`` (-> ``localhost``), the secrets
folder and the data folder moved, and listeners bound to loopback. Then
the pipeline runs with the stages' environment from the two files: every
event arrives, over SASL_SSL with PLAIN, whose password the broker read
through Kafka's FileConfigProvider.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import Settings, load_settings
from pipeline.stack.kafka_net import free_port
from pipeline.stack.local_kafka import LocalKafka
from tests.conftest import REPO, o2o, query

pytestmark = [pytest.mark.integration, pytest.mark.own_broker]

BASE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
OVERLAY = yaml.safe_load((REPO / "deploy" / "compose-kafka-sasl-ssl.yml").read_text())
NOT_PROPERTIES = {"KAFKA_HEAP_OPTS", "KAFKA_OPTS", "KAFKA_LOG4J_OPTS", "KAFKA_JMX_OPTS", "KAFKA_LOG_DIRS"}
"""The image's exclusions (JVM options), plus the data folder, which the local broker keeps its own."""


def compose_env(service: str) -> dict[str, str]:
    """A service's environment: the base file's, then the overlay's; compose's ``$$`` is a ``$``."""
    env: dict[str, Any] = {}
    for doc in (BASE, OVERLAY):
        env |= doc["services"].get(service, {}).get("environment", {}) or {}
    return {name: str(value).replace("$$", "$") for name, value in env.items()}


def property_name(env_name: str) -> str:
    """The apache/kafka image's rule from an environment variable's name to a server property's."""
    name = env_name.removeprefix("KAFKA_")
    name = re.sub(r"(?<!_)_(?!_)", ".", name)
    return name.replace("___", "-").replace("__", "_").lower()


def test_property_names_follow_the_image_rule() -> None:
    assert property_name("KAFKA_LISTENER_NAME_INTERNAL_PLAIN_SASL_JAAS_CONFIG") == (
        "listener.name.internal.plain.sasl.jaas.config"
    )
    assert property_name("KAFKA_LISTENER_NAME_EXTERNAL_SCRAM___SHA___512_SASL_JAAS_CONFIG") == (
        "listener.name.external.scram-sha-512.sasl.jaas.config"
    )
    assert property_name("KAFKA_SOME__UNDERSCORED_NAME") == "some_underscored.name"


class Moved:
    """The container's ports, host name and secrets folder, moved onto this machine."""

    def __init__(self, secrets: Path) -> None:
        self.secrets = secrets
        self.ports = {port: free_port() for port in (9092, 9093, 9094, 9095)}

    def __call__(self, value: str) -> str:
        value = value.replace("/kafka-secrets", str(self.secrets))
        value = re.sub(r"\bkafka:(?=\d)", "localhost:", value)
        value = re.sub(r"://:(?=\d)", "://127.0.0.1:", value)
        return re.sub(r"(?<=:)(909[2-5])\b", lambda m: str(self.ports[int(m.group(1))]), value)


@pytest.fixture
def compose_broker(tmp_path: Path) -> Iterator[tuple[Moved, Settings]]:
    """The overlay's broker on this machine: its secrets made by its own command, its settings moved."""
    moved = Moved(tmp_path / "kafka-secrets")
    command = OVERLAY["services"]["kafka-secrets"]["command"]
    assert command[:2] == ["stack", "certs"], command
    settings = load_settings(
        state_dir=tmp_path / "broker", kafka_port=moved.ports[9095], kafka_controller_port=moved.ports[9093]
    )
    o2o(settings, *[moved(arg) for arg in command], timeout=60)
    env = compose_env("kafka")
    overrides = {property_name(k): moved(v) for k, v in env.items() if k.startswith("KAFKA_")}
    overrides = {k: v for k, v in overrides.items() if k not in {property_name(n) for n in NOT_PROPERTIES}}
    assert "$" not in "".join(env.values()).replace("${file:", ""), "a secret written into the compose file"
    broker = LocalKafka(settings, dist_cache=REPO / ".state" / "kafka" / "dist", overrides=overrides)
    broker.up()
    try:
        yield moved, settings
    finally:
        broker.down(purge=True)


def stage_settings(moved: Moved, settings: Settings, service: str, **changes: object) -> Settings:
    """``settings`` with a compose service's O2O_ environment (moved), the ClickHouse and state ones kept."""
    env = {k: moved(v) for k, v in compose_env(service).items() if k.startswith("O2O_KAFKA_")}
    env["O2O_BOOTSTRAP_SERVERS"] = moved(compose_env(service)["O2O_BOOTSTRAP_SERVERS"])
    update: dict[str, object] = {name.removeprefix("O2O_").lower(): value for name, value in env.items()}
    for name in ("kafka_sasl_password_file", "kafka_ssl_ca_file"):
        update[name] = Path(str(update[name]))
    return settings.model_copy(update=update | changes)


def test_the_pipeline_runs_over_the_compose_sasl_ssl_broker(
    compose_broker: tuple[Moved, Settings], settings: Settings
) -> None:
    moved, _ = compose_broker
    stages = stage_settings(moved, settings, "ingest")
    assert stages.bootstrap_servers == f"localhost:{moved.ports[9092]}"  # the containers' listener
    assert (stages.kafka_security_protocol, stages.kafka_sasl_mechanism) == ("SASL_SSL", "PLAIN")
    for service in ("init", "identity", "journeys", "attribution", "sink", "activation"):
        assert stage_settings(moved, settings, service) == stages, f"{service} reaches Kafka differently"
    o2o(stages, "init")
    # from the host: the published listener, as the overlay's header says
    host = stages.model_copy(update={"bootstrap_servers": f"localhost:{moved.ports[9094]}"})
    produced = o2o(host, "simulate", "--customers", "10", "--days", "2")
    count = int(re.search(r"produced ([\d,]+) events", produced.stdout + produced.stderr)[1].replace(",", ""))  # type: ignore[index]
    assert count > 0
    o2o(stages, "run", "all", "--drain", timeout=300)
    assert query(settings, "SELECT count() FROM events")[0][0] == count
    wrong = moved.secrets.parent / "wrong-password"
    wrong.write_text("not-the-password\n")
    refused = o2o(
        stages.model_copy(update={"kafka_sasl_password_file": wrong}), "init", timeout=60, check=False
    )
    assert refused.returncode == 2 and "Kafka refused the credentials" in " ".join(refused.stderr.split())
