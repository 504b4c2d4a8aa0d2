"""How every Kafka client of the pipeline authenticates: TLS and SASL settings, in one place.

The settings (:class:`KafkaSecuritySettings`, part of
:class:`~pipeline.config.Settings`) are turned here into what each client
library takes: librdkafka properties for confluent-kafka's producers,
consumers and admin clients (:func:`librdkafka_security`), and credentials
with an ``ssl.SSLContext`` for faust and aiokafka (:func:`faust_credentials`).
A client that cannot authenticate is told apart from a broker that is away
(:func:`security_failure`), so commands stop with one clear message instead
of retrying for ever.
"""

from __future__ import annotations

import ssl
import threading
import time
from pathlib import Path
from typing import Any, Literal

from confluent_kafka import KafkaError
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from pipeline.private_files import read_secret

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]


class KafkaSecuritySettings(BaseModel):
    """The Kafka security settings (``O2O_KAFKA_SECURITY_PROTOCOL``, ...), checked together."""

    kafka_security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, for every Kafka client"
    )
    kafka_sasl_mechanism: SaslMechanism = Field(
        "SCRAM-SHA-512", description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER"
    )
    kafka_sasl_username: str = Field("", description="SASL user (PLAIN, SCRAM)")
    kafka_sasl_password: SecretStr = Field(SecretStr(""), description="SASL password (secret)")
    kafka_sasl_password_file: Path | None = Field(None, description="file holding the SASL password")
    kafka_ssl_ca_file: Path | None = Field(None, description="PEM CA certificates (default: the system's)")
    kafka_ssl_cert_file: Path | None = Field(None, description="PEM client certificate (mutual TLS)")
    kafka_ssl_key_file: Path | None = Field(None, description="PEM private key of the client certificate")
    kafka_ssl_check_hostname: bool = Field(True, description="check the broker's name in its certificate")
    kafka_oauth_token_endpoint: str = Field("", description="OAUTHBEARER: OAuth 2 token endpoint URL")
    kafka_oauth_client_id: str = Field("", description="OAUTHBEARER: client id")
    kafka_oauth_client_secret: SecretStr = Field(SecretStr(""), description="OAUTHBEARER: secret")
    kafka_oauth_client_secret_file: Path | None = Field(None, description="file holding the client secret")
    kafka_oauth_scope: str = Field("", description="OAUTHBEARER: scope to ask for (optional)")

    @field_validator(
        "kafka_sasl_password_file",
        "kafka_ssl_ca_file",
        "kafka_ssl_cert_file",
        "kafka_ssl_key_file",
        "kafka_oauth_client_secret_file",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @model_validator(mode="after")
    def _check_kafka_security(self) -> KafkaSecuritySettings:
        problems = kafka_security_problems(self)
        if problems:
            raise ValueError("Kafka security: " + "; ".join(problems))
        return self

    @property
    def kafka_uses_tls(self) -> bool:
        """True when the clients speak TLS to the brokers."""
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    @property
    def kafka_uses_sasl(self) -> bool:
        """True when the clients authenticate with SASL."""
        return self.kafka_security_protocol.startswith("SASL_")

    def kafka_sasl_secret(self) -> str:
        """The SASL password: from its file when one is named (read now: secrets rotate), else the setting."""
        if self.kafka_sasl_password_file is not None:
            return read_secret(self.kafka_sasl_password_file, "O2O_KAFKA_SASL_PASSWORD_FILE")
        return self.kafka_sasl_password.get_secret_value()

    def kafka_oauth_secret(self) -> str:
        """The OAuth client secret: from its file when one is named, else the setting."""
        if self.kafka_oauth_client_secret_file is not None:
            return read_secret(self.kafka_oauth_client_secret_file, "O2O_KAFKA_OAUTH_CLIENT_SECRET_FILE")
        return self.kafka_oauth_client_secret.get_secret_value()


def kafka_security_problems(s: KafkaSecuritySettings) -> list[str]:
    """Everything wrong with a combination of security settings, each named (empty: fine)."""
    problems: list[str] = []
    for name in ("kafka_ssl_ca_file", "kafka_ssl_cert_file", "kafka_ssl_key_file"):
        path = getattr(s, name)
        if path is not None and not path.is_file():
            problems.append(f"O2O_{name.upper()}={path} is not a readable file")
    if (s.kafka_ssl_cert_file is None) != (s.kafka_ssl_key_file is None):
        problems.append("O2O_KAFKA_SSL_CERT_FILE and O2O_KAFKA_SSL_KEY_FILE go together")
    tls_only = [n for n in ("kafka_ssl_ca_file", "kafka_ssl_cert_file") if getattr(s, n) is not None]
    if tls_only and not s.kafka_uses_tls:
        problems.append(f"O2O_{tls_only[0].upper()} is set but O2O_KAFKA_SECURITY_PROTOCOL="
                        f"{s.kafka_security_protocol} does not use TLS (SSL or SASL_SSL)")  # fmt: skip
    if s.kafka_sasl_password.get_secret_value() and s.kafka_sasl_password_file is not None:
        problems.append("set O2O_KAFKA_SASL_PASSWORD or O2O_KAFKA_SASL_PASSWORD_FILE, not both")
    if s.kafka_oauth_client_secret.get_secret_value() and s.kafka_oauth_client_secret_file is not None:
        problems.append("set O2O_KAFKA_OAUTH_CLIENT_SECRET or O2O_KAFKA_OAUTH_CLIENT_SECRET_FILE, not both")
    if not s.kafka_uses_sasl:
        return problems
    try:
        if s.kafka_sasl_mechanism == "OAUTHBEARER":
            wanted = ("kafka_oauth_token_endpoint", "kafka_oauth_client_id")
            missing = [n for n in wanted if not getattr(s, n)]
            if not s.kafka_oauth_secret():
                missing.append("kafka_oauth_client_secret")
            if s.kafka_oauth_token_endpoint and not s.kafka_oauth_token_endpoint.startswith(
                ("https://", "http://")
            ):
                problems.append("O2O_KAFKA_OAUTH_TOKEN_ENDPOINT must be an http(s) URL")
        else:
            missing = [] if s.kafka_sasl_username else ["kafka_sasl_username"]
            if not s.kafka_sasl_secret():
                missing.append("kafka_sasl_password")
    except ValueError as exc:
        return [*problems, str(exc)]
    if missing:
        named = ", ".join(f"O2O_{n.upper()}" for n in missing)
        problems.append(f"{s.kafka_security_protocol} with {s.kafka_sasl_mechanism} needs {named}")
    return problems


def librdkafka_security(s: KafkaSecuritySettings) -> dict[str, Any]:
    """The librdkafka properties for these settings (empty for PLAINTEXT)."""
    conf: dict[str, Any] = {}
    if s.kafka_security_protocol == "PLAINTEXT":
        return conf
    conf["security.protocol"] = s.kafka_security_protocol.lower()
    if s.kafka_uses_tls:
        if s.kafka_ssl_ca_file is not None:
            conf["ssl.ca.location"] = str(s.kafka_ssl_ca_file)
        if s.kafka_ssl_cert_file is not None and s.kafka_ssl_key_file is not None:
            conf["ssl.certificate.location"] = str(s.kafka_ssl_cert_file)
            conf["ssl.key.location"] = str(s.kafka_ssl_key_file)
        conf["ssl.endpoint.identification.algorithm"] = "https" if s.kafka_ssl_check_hostname else "none"
    if s.kafka_uses_sasl:
        conf["sasl.mechanism"] = s.kafka_sasl_mechanism
        if s.kafka_sasl_mechanism == "OAUTHBEARER":
            conf["sasl.oauthbearer.method"] = "oidc"
            conf["sasl.oauthbearer.token.endpoint.url"] = s.kafka_oauth_token_endpoint
            conf["sasl.oauthbearer.client.id"] = s.kafka_oauth_client_id
            conf["sasl.oauthbearer.client.secret"] = s.kafka_oauth_secret()
            if s.kafka_oauth_scope:
                conf["sasl.oauthbearer.scope"] = s.kafka_oauth_scope
        else:
            conf["sasl.username"] = s.kafka_sasl_username
            conf["sasl.password"] = s.kafka_sasl_secret()
    return conf


def ssl_context(s: KafkaSecuritySettings) -> ssl.SSLContext | None:
    """The TLS context of the Python (aiokafka) clients, or None without TLS."""
    if not s.kafka_uses_tls:
        return None
    context = ssl.create_default_context(cafile=str(s.kafka_ssl_ca_file) if s.kafka_ssl_ca_file else None)
    context.check_hostname = s.kafka_ssl_check_hostname
    if s.kafka_ssl_cert_file is not None and s.kafka_ssl_key_file is not None:
        context.load_cert_chain(str(s.kafka_ssl_cert_file), str(s.kafka_ssl_key_file))
    return context


class OAuthTokenProvider:
    """OAUTHBEARER tokens for aiokafka (client-credentials grant), each kept until shortly before it expires.

    librdkafka does the same by itself (``sasl.oauthbearer.method=oidc``).
    """

    REFRESH_MARGIN_SECONDS = 30.0

    def __init__(self, s: KafkaSecuritySettings, timeout: float = 10.0) -> None:
        self.settings = s
        self.timeout = timeout
        self._token = ""
        self._expires = 0.0
        self._lock = threading.Lock()

    def fetch(self) -> str:
        """A valid access token, asking the endpoint only when the last one is about to expire."""
        with self._lock:
            if self._token and time.monotonic() < self._expires:
                return self._token
            import httpx

            s = self.settings
            form = {"grant_type": "client_credentials"}
            if s.kafka_oauth_scope:
                form["scope"] = s.kafka_oauth_scope
            try:
                answer = httpx.post(
                    s.kafka_oauth_token_endpoint,
                    data=form,
                    auth=(s.kafka_oauth_client_id, s.kafka_oauth_secret()),
                    timeout=self.timeout,
                )
                answer.raise_for_status()
                doc = answer.json()
                token = str(doc["access_token"])
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                raise OAuthTokenError(
                    f"no OAUTHBEARER token from {s.kafka_oauth_token_endpoint}: {exc}"
                ) from None
            lifetime = float(doc.get("expires_in") or 300)
            self._token = token
            self._expires = time.monotonic() + max(lifetime - self.REFRESH_MARGIN_SECONDS, 1.0)
            return token

    async def token(self) -> str:
        """aiokafka's ``AbstractTokenProvider.token``: the request runs in a thread, off the event loop."""
        import asyncio

        return await asyncio.to_thread(self.fetch)

    def extensions(self) -> dict[str, str]:
        """SASL extensions (none)."""
        return {}


class OAuthTokenError(RuntimeError):
    """The token endpoint did not hand out a token."""


def faust_credentials(s: KafkaSecuritySettings) -> Any:
    """faust's ``broker_credentials`` for these settings, or None for PLAINTEXT."""
    import faust
    from aiokafka.abc import AbstractTokenProvider

    context = ssl_context(s)
    if s.kafka_uses_sasl:
        if s.kafka_sasl_mechanism == "OAUTHBEARER":
            # aiokafka accepts only its own provider type; registering keeps aiokafka out of
            # the imports of the confluent-kafka commands
            AbstractTokenProvider.register(OAuthTokenProvider)
            return faust.OAuthCredentials(oauth_cb=OAuthTokenProvider(s), ssl_context=context)
        return faust.SASLCredentials(
            username=s.kafka_sasl_username,
            password=s.kafka_sasl_secret(),
            ssl_context=context,
            mechanism=s.kafka_sasl_mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


_SECURITY_HINTS = ("SSL handshake", "security.protocol", "SASL authentication", "Authentication failed")


def security_failure(err: KafkaError) -> str | None:
    """What a client error says about the security settings, or None when it is not about them.

    Wrong credentials, a certificate not signed by a known CA, or plain text
    against a TLS listener never heal by retrying, unlike a broker that is away.
    """
    text = err.str()
    if "OAUTHBEARER token" in text:  # librdkafka got no token: the endpoint refused or is away
        return (f"no OAuth token from O2O_KAFKA_OAUTH_TOKEN_ENDPOINT (check it, O2O_KAFKA_OAUTH_CLIENT_ID "
                f"and O2O_KAFKA_OAUTH_CLIENT_SECRET): {text}")  # fmt: skip
    if err.code() == KafkaError._AUTHENTICATION or "Authentication failed" in text:
        return (f"Kafka refused the credentials (O2O_KAFKA_SASL_MECHANISM, O2O_KAFKA_SASL_USERNAME, "
                f"O2O_KAFKA_SASL_PASSWORD or the OAuth settings): {text}")  # fmt: skip
    if err.code() == KafkaError._SSL or "SSL handshake" in text or "certificate verify" in text:
        return ("the TLS handshake with Kafka failed (O2O_KAFKA_SSL_CA_FILE, O2O_KAFKA_SECURITY_PROTOCOL): "
                f"{text}")  # fmt: skip
    if any(hint in text for hint in _SECURITY_HINTS):
        return (f"Kafka closed the connection during the handshake; does O2O_KAFKA_SECURITY_PROTOCOL "
                f"match the listener? {text}")  # fmt: skip
    return None
