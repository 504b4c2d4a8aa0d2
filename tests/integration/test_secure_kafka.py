"""The pipeline against a SASL_SSL listener (`o2o stack up --secure`), and the security mistakes users make.

The session's broker runs with the secure listener of `o2o stack up --secure`
(tests/conftest.py): a local CA, a broker certificate, the SCRAM user ``o2o``
and the key set of the local OAuth issuer. Every client reaches it with the
settings `client.env` names, or with OAUTHBEARER tokens from `o2o stack
oauth-issuer`: confluent-kafka in ingest, the sink, the producer and the
admin commands; aiokafka inside faust in identity, journeys and attribution.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.stack.oauth_issuer import OAuthIssuer, ensure_issuer_files
from pipeline.stack.secure_listener import SecureFiles
from tests.conftest import o2o, query, start_o2o, stop_o2o

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


def run_pipeline(settings: Settings, client: Settings) -> None:
    """Simulate 25 customers through ``client``'s Kafka settings; every event stored, identities resolved."""
    over_tls = client
    o2o(over_tls, "init")
    produced = o2o(over_tls, "simulate", "--customers", "25", "--days", "3")
    count = int(re.search(r"produced ([\d,]+) events", produced.stdout + produced.stderr)[1].replace(",", ""))  # type: ignore[index]
    assert count > 0
    o2o(over_tls, "run", "all", "--drain", timeout=300)
    assert query(settings, "SELECT count() FROM events")[0][0] == count
    assert query(settings, "SELECT count() FROM sessions")[0][0] > 0
    persons = query(settings, "SELECT uniqExact(person_id) FROM events")[0][0]
    assert 0 < persons <= 25 * 2  # identity resolved over TLS, through faust's login


def test_whole_pipeline_over_sasl_ssl(settings: Settings, kafka_stack: Settings) -> None:
    run_pipeline(settings, secure(settings, kafka_stack))


@pytest.fixture
def oauth_issuer(kafka_stack: Settings) -> Iterator[dict[str, str]]:
    """`o2o stack oauth-issuer` of the session broker's state folder: the settings it printed."""
    child = start_o2o(kafka_stack, "stack", "oauth-issuer")
    try:
        assert child.stdout is not None
        lines = [child.stdout.readline().strip() for _ in range(4)]
        yield dict(line.split("=", 1) for line in lines)
    finally:
        stop_o2o(child, timeout=10)
    assert child.returncode == 0, child.stderr


def with_oauth(
    settings: Settings, kafka_stack: Settings, printed: dict[str, str], **changes: object
) -> Settings:
    """Settings reaching the secure listener with OAUTHBEARER, as `o2o stack oauth-issuer` printed them."""
    update = {name.removeprefix("O2O_").lower(): value for name, value in printed.items()}
    update["kafka_oauth_client_secret_file"] = Path(update["kafka_oauth_client_secret_file"])
    return secure(
        settings, kafka_stack, kafka_sasl_username="", kafka_sasl_password_file=None, **update | changes
    )


def test_whole_pipeline_over_oauthbearer(
    settings: Settings, kafka_stack: Settings, oauth_issuer: dict[str, str]
) -> None:
    client = with_oauth(settings, kafka_stack, oauth_issuer)
    assert client.kafka_sasl_mechanism == "OAUTHBEARER"
    run_pipeline(settings, client)


@pytest.mark.parametrize("mistake", ["wrong client secret", "issuer the broker does not trust"])
def test_oauth_mistakes_end_with_one_clear_error(
    mistake: str, settings: Settings, kafka_stack: Settings, oauth_issuer: dict[str, str], tmp_path: Path
) -> None:
    stranger = None
    if mistake == "wrong client secret":
        wrong = tmp_path / "secret"
        wrong.write_text("not-the-secret\n")
        bad = with_oauth(settings, kafka_stack, oauth_issuer, kafka_oauth_client_secret_file=wrong)
        expected = "no OAuth token from O2O_KAFKA_OAUTH_TOKEN_ENDPOINT"
    else:  # a token signed with another key: the broker checks it against the local issuer's key set
        stranger = OAuthIssuer(ensure_issuer_files(tmp_path / "other")).start()
        bad = with_oauth(
            settings, kafka_stack, oauth_issuer,
            kafka_oauth_token_endpoint=stranger.token_endpoint,
            kafka_oauth_client_secret_file=stranger.files.secret_file,
        )  # fmt: skip
        expected = "Kafka refused the credentials"
    try:
        assert_each_command_ends_with(bad, expected)
    finally:
        if stranger is not None:
            stranger.stop()
    if stranger is not None:
        assert stranger.issued > 0  # the clients had tokens; the broker refused them


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
    assert_each_command_ends_with(bad, expected)


def assert_each_command_ends_with(bad: Settings, expected: str) -> None:
    """`o2o init`, `run identity` and `run ingest` each end with exit 2 and ``expected``, no traceback."""
    for command in (["init"], ["run", "identity"], ["run", "ingest"]):
        done = o2o(bad, *command, timeout=60, check=False)
        message = " ".join(done.stderr.split())
        assert done.returncode == 2, f"o2o {' '.join(command)}: {done.returncode}\n{done.stderr[-2000:]}"
        assert expected in message, message[-2000:]
        assert "Traceback" not in done.stderr
