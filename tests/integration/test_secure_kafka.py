"""The pipeline against a SASL_SSL listener (`o2o stack up --secure`), and the security mistakes users make.

The session's broker runs with the secure listener of `o2o stack up --secure`
(tests/conftest.py): a local CA, a broker certificate and the SCRAM user
``o2o``. Every client reaches it with the settings `client.env` names:
confluent-kafka in ingest, the sink, the producer and the admin commands;
aiokafka inside faust in identity, journeys and attribution.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.stack.secure_listener import SecureFiles
from tests.conftest import o2o, query

pytestmark = pytest.mark.integration


def client_env(kafka_stack: Settings) -> dict[str, str]:
    """The O2O_ settings `o2o stack up --secure` wrote for clients of the secure listener."""
    text = SecureFiles(kafka_stack.state_dir / "kafka" / "secure").client_env.read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def secure(settings: Settings, kafka_stack: Settings, **changes: object) -> Settings:
    """This test's settings, reaching Kafka through the secure listener (with ``changes``)."""
    env = client_env(kafka_stack)
    update = {name.removeprefix("O2O_").lower(): value for name, value in env.items()}
    update |= {"kafka_ssl_ca_file": Path(env["O2O_KAFKA_SSL_CA_FILE"])}
    update |= {"kafka_sasl_password_file": Path(env["O2O_KAFKA_SASL_PASSWORD_FILE"])}
    return settings.model_copy(update=update | changes)


def test_client_env_names_the_secure_listener(kafka_stack: Settings) -> None:
    env = client_env(kafka_stack)
    assert env["O2O_BOOTSTRAP_SERVERS"] == f"127.0.0.1:{kafka_stack.kafka_secure_port}"
    assert env["O2O_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    password = Path(env["O2O_KAFKA_SASL_PASSWORD_FILE"])
    assert password.stat().st_mode & 0o077 == 0, "the password file is readable by others"


def test_whole_pipeline_over_sasl_ssl(settings: Settings, kafka_stack: Settings) -> None:
    over_tls = secure(settings, kafka_stack)
    o2o(over_tls, "init")
    produced = o2o(over_tls, "simulate", "--customers", "25", "--days", "3")
    count = int(re.search(r"produced ([\d,]+) events", produced.stdout + produced.stderr)[1].replace(",", ""))  # type: ignore[index]
    assert count > 0
    o2o(over_tls, "run", "all", "--drain", timeout=300)
    assert query(settings, "SELECT count() FROM events")[0][0] == count
    assert query(settings, "SELECT count() FROM sessions")[0][0] > 0
    persons = query(settings, "SELECT uniqExact(person_id) FROM events")[0][0]
    assert 0 < persons <= 25 * 2  # identity resolved over TLS, through faust's SCRAM login


MISTAKES = {
    "wrong password": ("wrong_password", "Kafka refused the credentials"),
    "unknown CA": ("system_ca", "certificate verify failed"),
    "plain text against TLS": ("plaintext", "TLS listener reached with plain text"),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_security_mistakes_end_with_one_clear_error(
    mistake: str, settings: Settings, kafka_stack: Settings, tmp_path: Path
) -> None:
    kind, expected = MISTAKES[mistake]
    if kind == "wrong_password":
        wrong = tmp_path / "password"
        wrong.write_text("not-the-password\n")
        bad = secure(settings, kafka_stack, kafka_sasl_password_file=wrong)
    elif kind == "system_ca":
        bad = secure(settings, kafka_stack, kafka_ssl_ca_file=None)  # the system's CAs do not know ours
    else:
        bad = secure(settings, kafka_stack, kafka_security_protocol="SASL_PLAINTEXT", kafka_ssl_ca_file=None)
    for command in (["init"], ["run", "identity"], ["run", "ingest"]):
        done = o2o(bad, *command, timeout=60, check=False)
        message = " ".join(done.stderr.split())
        assert done.returncode == 2, f"o2o {' '.join(command)}: {done.returncode}\n{done.stderr[-2000:]}"
        assert expected in message, message[-2000:]
        assert "Traceback" not in done.stderr
