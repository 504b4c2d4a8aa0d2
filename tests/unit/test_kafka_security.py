"""Kafka security settings: validation, what each client library gets, OAuth tokens, local certificates."""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faust
import httpx
import orjson
import pytest
from aiokafka.abc import AbstractTokenProvider
from confluent_kafka import KafkaError
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from pipeline.config import load_settings
from pipeline.errors import ConfigError
from pipeline.kafka.clients import consumer_config, producer_config
from pipeline.kafka.security import (
    OAuthTokenError,
    OAuthTokenProvider,
    faust_credentials,
    librdkafka_security,
    security_failure,
    ssl_context,
)
from pipeline.runtime.stages import settings_env
from pipeline.stack.oauth_issuer import AUDIENCE, ISSUER, OAuthIssuer
from pipeline.stack.secure_listener import (
    SecureFiles,
    client_settings,
    ensure_secure_files,
    jvm_properties,
    listener_properties,
)


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    """A file that stands for a PEM file (validation only checks it is there)."""
    path = tmp_path / "some.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


def test_plaintext_adds_nothing_to_the_clients() -> None:
    settings = load_settings()
    assert librdkafka_security(settings) == {}
    assert faust_credentials(settings) is None
    assert "security.protocol" not in producer_config(settings)


def test_sasl_ssl_with_scram_reaches_every_confluent_client(pem: Path, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    settings = load_settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="o2o",
        kafka_sasl_password_file=secret,
        kafka_ssl_ca_file=pem,
    )
    expected = {
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "o2o",
        "sasl.password": "s3cret",  # without the file's newline
        "ssl.ca.location": str(pem),
        "ssl.endpoint.identification.algorithm": "https",
    }
    assert librdkafka_security(settings) == expected
    for conf in (producer_config(settings), consumer_config(settings, "g")):
        assert expected.items() <= conf.items()
    secret.write_text("rotated")  # a mounted secret changes: the next client reads the new one
    assert librdkafka_security(settings)["sasl.password"] == "rotated"


def test_mutual_tls_and_no_hostname_check(pem: Path) -> None:
    settings = load_settings(
        kafka_security_protocol="SSL",
        kafka_ssl_ca_file=pem,
        kafka_ssl_cert_file=pem,
        kafka_ssl_key_file=pem,
        kafka_ssl_check_hostname=False,
    )
    assert librdkafka_security(settings) == {
        "security.protocol": "ssl",
        "ssl.ca.location": str(pem),
        "ssl.certificate.location": str(pem),
        "ssl.key.location": str(pem),
        "ssl.endpoint.identification.algorithm": "none",
    }


def test_oauthbearer_uses_the_token_endpoint() -> None:
    settings = load_settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="OAUTHBEARER",
        kafka_oauth_token_endpoint="https://idp.example/token",
        kafka_oauth_client_id="pipeline",
        kafka_oauth_client_secret="xyz",
        kafka_oauth_scope="kafka",
    )
    conf = librdkafka_security(settings)
    assert conf["sasl.oauthbearer.method"] == "oidc"
    assert conf["sasl.oauthbearer.token.endpoint.url"] == "https://idp.example/token"
    assert (conf["sasl.oauthbearer.client.id"], conf["sasl.oauthbearer.client.secret"]) == ("pipeline", "xyz")
    assert conf["sasl.oauthbearer.scope"] == "kafka"
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.OAuthCredentials)
    assert isinstance(credentials.oauth_cb, OAuthTokenProvider)
    assert isinstance(credentials.oauth_cb, AbstractTokenProvider)  # aiokafka refuses any other type
    assert credentials.protocol.value == "SASL_SSL"


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "needs O2O_KAFKA_SASL_USERNAME, O2O_KAFKA_SASL_PASSWORD"),
        ({"kafka_ssl_ca_file": "/no/such.pem", "kafka_security_protocol": "SSL"}, "is not a readable file"),
        ({"kafka_ssl_ca_file": "PEM"}, "is set but O2O_KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not use TLS"),
        ({"kafka_ssl_cert_file": "PEM", "kafka_security_protocol": "SSL"}, "go together"),
        ({"kafka_sasl_password": "a", "kafka_sasl_password_file": "PEM"}, "not both"),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u",
             "kafka_sasl_password_file": "/no/such"},
            "O2O_KAFKA_SASL_PASSWORD_FILE: cannot read /no/such",
        ),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "OAUTHBEARER",
             "kafka_oauth_token_endpoint": "idp/token"},
            "O2O_KAFKA_OAUTH_TOKEN_ENDPOINT must be an http(s) URL",
        ),
        ({"kafka_security_protocol": "TLS"}, "O2O_KAFKA_SECURITY_PROTOCOL"),
    ],
)  # fmt: skip
def test_security_settings_are_checked_at_start_up(changes: dict[str, str], problem: str, pem: Path) -> None:
    values = {k: str(pem) if v == "PEM" else v for k, v in changes.items()}
    with pytest.raises(ConfigError) as raised:
        load_settings(**values)
    assert problem in " ".join(str(raised.value).split())


def test_empty_file_settings_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("O2O_KAFKA_SSL_CA_FILE", "")
    assert load_settings().kafka_ssl_ca_file is None


def test_child_processes_get_the_secret_itself() -> None:
    settings = load_settings(
        kafka_security_protocol="SASL_SSL", kafka_sasl_username="u", kafka_sasl_password="pw"
    )
    env = settings_env(settings)
    assert env["O2O_KAFKA_SASL_PASSWORD"] == "pw"
    assert "O2O_KAFKA_OAUTH_CLIENT_SECRET" not in env  # unset stays unset
    assert "pw" not in repr(settings)  # and the settings never print it


def test_sasl_credentials_for_faust(pem: Path) -> None:
    settings = load_settings(
        kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="u", kafka_sasl_password="pw",
        kafka_sasl_mechanism="SCRAM-SHA-256",
    )  # fmt: skip
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password) == ("u", "pw")
    assert credentials.mechanism.value == "SCRAM-SHA-256"
    assert credentials.protocol.value == "SASL_PLAINTEXT"
    assert credentials.ssl_context is None


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[OAuthIssuer]:
    """The local OAuth issuer of `o2o stack oauth-issuer`, on a free loopback port."""
    running = OAuthIssuer(ensure_secure_files(tmp_path).issuer, lifetime=600).start()
    try:
        yield running
    finally:
        running.stop()


def oauth_settings(issuer: OAuthIssuer, secret_file: Path | None = None) -> Any:
    return load_settings(
        kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="OAUTHBEARER",
        kafka_oauth_token_endpoint=issuer.token_endpoint, kafka_oauth_client_id="o2o",
        kafka_oauth_client_secret_file=secret_file or issuer.files.secret_file, kafka_oauth_scope="kafka",
    )  # fmt: skip


def test_oauth_tokens_are_fetched_once_and_kept(issuer: OAuthIssuer, tmp_path: Path) -> None:
    provider = OAuthTokenProvider(oauth_settings(issuer))
    token = provider.fetch()
    assert provider.fetch() == token  # still valid: not asked again
    assert issuer.issued == 1
    assert jwt_claims(issuer, token)["scope"] == "kafka"
    provider._expires = 0.0  # the token ran out
    provider.fetch()
    assert issuer.issued == 2
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-secret\n")
    with pytest.raises(OAuthTokenError, match=r"no OAUTHBEARER token from .*401"):
        OAuthTokenProvider(oauth_settings(issuer, wrong)).fetch()
    assert (issuer.issued, issuer.refused) == (2, 1)


def b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_claims(issuer: OAuthIssuer, token: str) -> dict[str, Any]:
    """The claims of ``token``, its signature checked against the issuer's key set (as the broker does)."""
    (jwk,) = orjson.loads(issuer.files.jwks_file.read_bytes())["keys"]
    header, claims, signature = (b64url(part) for part in token.split("."))
    assert orjson.loads(header) == {"alg": "RS256", "typ": "JWT", "kid": jwk["kid"]}
    n, e = (int.from_bytes(b64url(jwk[k]), "big") for k in "ne")
    key = rsa.RSAPublicNumbers(e, n).public_key()
    key.verify(signature, token.rsplit(".", 1)[0].encode(), padding.PKCS1v15(), hashes.SHA256())
    return dict(orjson.loads(claims))


def test_the_local_issuer_signs_for_the_broker_and_refuses_strangers(issuer: OAuthIssuer) -> None:
    token = OAuthTokenProvider(oauth_settings(issuer)).fetch()
    claims = jwt_claims(issuer, token)
    assert (claims["sub"], claims["aud"], claims["iss"]) == ("o2o", AUDIENCE, ISSUER)
    assert claims["exp"] - claims["iat"] == 600
    forged = token[:-8] + ("AAAAAAAA" if not token.endswith("AAAAAAAA") else "BBBBBBBB")
    with pytest.raises(InvalidSignature):
        jwt_claims(issuer, forged)
    answers = {
        "no grant": ({"client_id": "o2o"}, 400, "unsupported_grant_type"),
        "unknown client": ({"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"}, 401,
                           "invalid_client"),
    }  # fmt: skip
    for form, status, error in answers.values():
        answer = httpx.post(issuer.token_endpoint, data=form, timeout=5)
        assert (answer.status_code, answer.json()) == (status, {"error": error})
    props = listener_properties(SecureFiles(issuer.files.folder), 9094, "127.0.0.1")
    assert "OAUTHBEARER" in props["sasl.enabled.mechanisms"].split(",")
    assert props["sasl.oauthbearer.jwks.endpoint.url"] == issuer.files.jwks_file.as_uri()
    assert jvm_properties(SecureFiles(issuer.files.folder)) == [
        f"-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls={issuer.files.jwks_file.as_uri()}"
    ]
    for path in (issuer.files.key_file, issuer.files.jwks_file, issuer.files.secret_file):
        assert path.stat().st_mode & 0o077 == 0, path


@pytest.mark.parametrize(
    ("code", "text", "names"),
    [
        (
            KafkaError._AUTHENTICATION,
            "SASL authentication error: Authentication failed",
            "refused the credentials",
        ),
        (KafkaError._SSL, "SSL handshake failed: certificate verify failed", "O2O_KAFKA_SSL_CA_FILE"),
        (
            KafkaError._AUTHENTICATION,
            "Failed to acquire SASL OAUTHBEARER token: Failed to connect to 127.0.0.1:1",
            "no OAuth token from O2O_KAFKA_OAUTH_TOKEN_ENDPOINT",
        ),
        (KafkaError._TRANSPORT, "Connect to ipv4#127.0.0.1:1 failed: Connection refused", None),
        (KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down", None),
    ],
)
def test_security_failures_are_told_apart_from_a_broker_away(code: int, text: str, names: str | None) -> None:
    reason = security_failure(KafkaError(code, text))
    if names is None:
        assert reason is None
    else:
        assert reason is not None and names in reason and text in reason


def test_local_certificates_name_loopback_and_chain_to_the_ca(tmp_path: Path) -> None:
    files = ensure_secure_files(tmp_path)
    ca = x509.load_pem_x509_certificate(files.ca_file.read_bytes())
    broker = x509.load_pem_x509_certificates(files.keystore_file.read_bytes())[0]
    broker.verify_directly_issued_by(ca)
    names = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    for path in (files.ca_key_file, files.keystore_file, files.password_file):
        assert path.stat().st_mode & 0o077 == 0, path
    again = ensure_secure_files(tmp_path)  # made once: a restart keeps the clients' trust
    assert again.ca_file.read_bytes() == files.ca_file.read_bytes()
    props = listener_properties(files, 9094, "127.0.0.1")
    assert f'user_o2o="{files.password()}"' in props["listener.name.sasl_ssl.plain.sasl.jaas.config"]
    settings = load_settings(
        **{k.removeprefix("O2O_").lower(): v for k, v in client_settings(files, "127.0.0.1", 9094).items()}
    )
    context = ssl_context(settings)  # the generated CA loads as the clients' trust
    assert context is not None and context.check_hostname
