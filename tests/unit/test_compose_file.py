"""docker-compose.yml is locked down: ports on loopback, ClickHouse behind a generated password in a file."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = (ROOT / "docker-compose.yml").read_text()


def services() -> dict[str, str]:
    """Each service's block of lines, by name."""
    body = COMPOSE.split("\nservices:\n", 1)[1].split("\nvolumes:\n", 1)[0]
    blocks = re.split(r"^  (?=[a-z][\w-]*:\n)", body, flags=re.M)
    return {block.split(":", 1)[0]: block for block in blocks if re.match(r"[a-z][\w-]*:\n", block)}


def test_every_published_port_is_on_loopback() -> None:
    published = re.findall(r'^      - "([^"]+)"$', COMPOSE, re.M)
    ports = [p for p in published if re.fullmatch(r"[\d.:]+", p)]
    assert ports, "no published port found: the test no longer reads the file"
    assert all(p.startswith("127.0.0.1:") for p in ports), ports


def test_clickhouse_password_is_generated_and_read_from_a_file() -> None:
    blocks = services()
    clickhouse = blocks["clickhouse"]
    assert "CLICKHOUSE_SKIP_USER_SETUP" not in clickhouse
    assert "CLICKHOUSE_PASSWORD_FILE: /secrets/clickhouse_password" in clickhouse
    assert "secrets.token_hex(32)" in blocks["secrets"] and "0o444" in blocks["secrets"]
    dsn = re.search(r'O2O_CLICKHOUSE_DSN: "([^"]+)"', COMPOSE)[1]  # type: ignore[index]
    assert urlsplit(dsn).password is None
    assert "O2O_CLICKHOUSE_PASSWORD_FILE: /secrets/clickhouse_password" in COMPOSE
    pipeline = [
        name for name, block in blocks.items() if "o2o-stage" in block or 'command: ["init"]' in block
    ]
    assert len(pipeline) == 7, pipeline  # init and the six stages
    for name in [*pipeline, "clickhouse"]:
        assert "- secrets:/secrets:ro" in blocks[name], f"{name} does not mount the secrets read-only"


def test_the_sasl_ssl_overlay_mounts_its_secrets_read_only_and_publishes_nothing_new() -> None:
    overlay = yaml.safe_load((ROOT / "deploy" / "compose-kafka-sasl-ssl.yml").read_text())
    services = overlay["services"]
    assert all("ports" not in block for block in services.values())
    for name in ("kafka", "init", "ingest", "identity", "journeys", "attribution", "sink", "activation"):
        assert "kafka-secrets:/kafka-secrets:ro" in services[name]["volumes"], name
    assert services["kafka-secrets"]["volumes"] == ["kafka-secrets:/kafka-secrets"]
    env = services["kafka"]["environment"]
    protocols = dict(pair.split(":") for pair in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    plain = [name for name, protocol in protocols.items() if protocol == "PLAINTEXT"]
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    # plain text only for the controller (never published) and on the container's own loopback
    assert sorted(plain) == ["BROKER", "CONTROLLER"] and listeners["BROKER"].startswith("127.0.0.1:")
    for name, protocol in protocols.items():
        if protocol == "SASL_SSL":
            assert "${file:" in env[f"KAFKA_LISTENER_NAME_{name}_PLAIN_SASL_JAAS_CONFIG"], name
