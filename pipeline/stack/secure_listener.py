"""The local broker's SASL_SSL listener (``o2o stack up --secure``): certificates, SCRAM user, settings.

Everything lives under ``<state_dir>/kafka/secure`` (0700, files 0600)::

    ca.pem        the certificate authority the clients trust (O2O_KAFKA_SSL_CA_FILE)
    ca-key.pem    its private key (only to sign a new broker certificate)
    broker.pem    the broker's private key and certificate chain (a PEM key store)
    password      the SCRAM password of the user ``o2o`` (O2O_KAFKA_SASL_PASSWORD_FILE)
    plain-users.properties  ``o2o=<password>``, for a broker's FileConfigProvider (docker compose)
    client.env    the O2O_ settings that reach the listener, for ``set -a; . client.env``

plus the local OAuth issuer's key, key set and client secret
(:mod:`pipeline.stack.oauth_issuer`). The certificate names ``localhost`` and
``127.0.0.1``; the listener accepts SCRAM-SHA-512, SCRAM-SHA-256, PLAIN and
OAUTHBEARER (JWTs signed by the local issuer's key, for its audience and
issuer). The plain-text listener stays, on loopback, for the broker itself.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pipeline.errors import StackError
from pipeline.private_files import private_dir, write_private_file
from pipeline.stack.oauth_issuer import AUDIENCE, ISSUER, IssuerFiles, ensure_issuer_files

log = logging.getLogger(__name__)

USER = "o2o"
LISTENER = "SASL_SSL"
SCRAM_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
SCRAM_ITERATIONS = 8192
VALID_DAYS = 825
LOCAL_HOSTS = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class SecureFiles:
    """The files of the secure listener of one state folder."""

    folder: Path

    @property
    def ca_file(self) -> Path:
        """The CA certificate clients trust."""
        return self.folder / "ca.pem"

    @property
    def ca_key_file(self) -> Path:
        """The CA's private key."""
        return self.folder / "ca-key.pem"

    @property
    def keystore_file(self) -> Path:
        """The broker's key and certificate chain, in PEM."""
        return self.folder / "broker.pem"

    @property
    def password_file(self) -> Path:
        """The SCRAM (and PLAIN) password of :data:`USER`."""
        return self.folder / "password"

    @property
    def plain_users_file(self) -> Path:
        """``user=password`` lines, for a broker that reads PLAIN users with Kafka's FileConfigProvider."""
        return self.folder / "plain-users.properties"

    @property
    def client_env(self) -> Path:
        """The O2O_ settings for clients of the listener."""
        return self.folder / "client.env"

    @property
    def issuer(self) -> IssuerFiles:
        """The local OAuth issuer's files (OAUTHBEARER)."""
        return IssuerFiles(self.folder)

    def password(self) -> str:
        """The user's password."""
        return self.password_file.read_text().strip()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def ensure_secure_files(state_dir: Path) -> SecureFiles:
    """The local broker's files under ``<state_dir>/kafka/secure``, created once; later calls reuse them."""
    return ensure_secure_folder(state_dir / "kafka" / "secure", LOCAL_HOSTS)


def ensure_secure_folder(folder: Path, hosts: Sequence[str], shared: bool = False) -> SecureFiles:
    """Create the CA, a broker certificate naming ``hosts`` and the password once; later calls reuse them.

    ``shared`` leaves the files readable by every user (0444), for a volume that
    only the broker's and the pipeline's containers mount, which run as
    different users (like the ClickHouse password of docker-compose.yml).
    """
    files = SecureFiles(folder)
    private_dir(files.folder)
    if not files.password_file.exists():
        write_private_file(files.password_file, (secrets.token_urlsafe(24) + "\n").encode())
    ensure_issuer_files(files.folder)
    if not (files.keystore_file.exists() and files.ca_file.exists()):
        _write_certificates(files, hosts)
    users = f"{USER}={files.password()}\n".encode()
    if not files.plain_users_file.exists() or files.plain_users_file.read_bytes() != users:
        write_private_file(files.plain_users_file, users)
    if shared:
        files.folder.chmod(0o755)
        for path in files.folder.iterdir():
            path.chmod(0o600 if path in (files.ca_key_file, files.issuer.key_file) else 0o444)
    return files


def _host_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write_certificates(files: SecureFiles, hosts: Sequence[str]) -> None:
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=VALID_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("o2o local CA"))
        .issuer_name(_name("o2o local CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [_host_name(host) for host in hosts]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    write_private_file(files.ca_key_file, _pem_key(ca_key))
    write_private_file(
        files.keystore_file, _pem_key(key) + cert.public_bytes(pem) + ca_cert.public_bytes(pem)
    )
    write_private_file(files.ca_file, ca_cert.public_bytes(pem))
    log.info("wrote a local CA and a broker certificate for %s to %s", ", ".join(hosts), files.folder)


def listener_properties(files: SecureFiles, port: int, host: str) -> dict[str, str]:
    """server.properties entries of the SASL_SSL listener (the listener itself is added by the caller)."""
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    plain = (
        f'org.apache.kafka.common.security.plain.PlainLoginModule required user_{USER}="{files.password()}";'
    )
    oauth = "org.apache.kafka.common.security.oauthbearer"
    prefix = f"listener.name.{LISTENER.lower()}"
    return {
        "sasl.enabled.mechanisms": ",".join((*SCRAM_MECHANISMS, "PLAIN", "OAUTHBEARER")),
        f"{prefix}.scram-sha-512.sasl.jaas.config": scram,
        f"{prefix}.scram-sha-256.sasl.jaas.config": scram,
        f"{prefix}.plain.sasl.jaas.config": plain,
        f"{prefix}.oauthbearer.sasl.jaas.config": f"{oauth}.OAuthBearerLoginModule required;",
        f"{prefix}.oauthbearer.sasl.server.callback.handler.class": (
            f"{oauth}.OAuthBearerValidatorCallbackHandler"
        ),
        "sasl.oauthbearer.jwks.endpoint.url": files.issuer.jwks_url,
        "sasl.oauthbearer.expected.audience": AUDIENCE,
        "sasl.oauthbearer.expected.issuer": ISSUER,
        f"{prefix}.ssl.keystore.type": "PEM",
        f"{prefix}.ssl.keystore.location": str(files.keystore_file),
        f"{prefix}.ssl.client.auth": "none",
    }


def jvm_properties(files: SecureFiles) -> list[str]:
    """The broker's JVM flags the listener needs: Kafka reads only the OAuth URLs it is allowed to."""
    return [f"-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls={files.issuer.jwks_url}"]


def client_settings(files: SecureFiles, host: str, port: int) -> dict[str, str]:
    """The O2O_ settings that reach the secure listener as the user ``o2o``."""
    return {
        "O2O_BOOTSTRAP_SERVERS": f"{host}:{port}",
        "O2O_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "O2O_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "O2O_KAFKA_SASL_USERNAME": USER,
        "O2O_KAFKA_SASL_PASSWORD_FILE": str(files.password_file),
        "O2O_KAFKA_SSL_CA_FILE": str(files.ca_file),
    }


def write_client_env(files: SecureFiles, host: str, port: int) -> Path:
    """Write :func:`client_settings` as ``client.env`` (shell syntax) and return its path."""
    lines = [f"{name}={value}" for name, value in client_settings(files, host, port).items()]
    write_private_file(files.client_env, ("\n".join(lines) + "\n").encode())
    return files.client_env


def create_scram_user(plain_bootstrap: str, files: SecureFiles, timeout: float = 30.0) -> None:
    """Store the user's SCRAM credentials in the cluster (through the plain-text listener); idempotent."""
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    admin = AdminClient({"bootstrap.servers": plain_bootstrap, "log_level": 3})
    password = files.password().encode()
    upserts: list[Any] = [
        UserScramCredentialUpsertion(
            USER,
            ScramCredentialInfo(getattr(ScramMechanism, m.replace("-", "_")), SCRAM_ITERATIONS),
            password,
        )
        for m in SCRAM_MECHANISMS
    ]
    try:
        for upsert in upserts:  # one per request: the broker refuses a user altered twice in one
            for future in admin.alter_user_scram_credentials([upsert], request_timeout=timeout).values():
                future.result(timeout=timeout)
    except Exception as exc:
        raise StackError(f"could not create the SCRAM user {USER!r} on the local broker: {exc}") from exc
