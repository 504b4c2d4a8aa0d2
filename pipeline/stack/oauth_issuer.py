"""A local OAuth 2 token issuer for the secure listener's OAUTHBEARER login (``o2o stack oauth-issuer``).

A real cluster takes its tokens from the company's identity provider (Okta,
Entra ID, Keycloak, Cognito...). To try and test OAUTHBEARER on one machine,
``o2o stack up --secure`` also makes, under ``<state_dir>/kafka/secure``:

    oauth-key.pem        the issuer's RSA signing key (0600)
    jwks.json            its public half as a JSON Web Key Set; the broker reads it
                         (``sasl.oauthbearer.jwks.endpoint.url=file://...``)
    oauth-client-secret  the secret of the client ``o2o``

and ``o2o stack oauth-issuer`` serves the client-credentials grant on
loopback: ``POST /token`` with the client id and secret (HTTP Basic, or
``client_id`` and ``client_secret`` in the form) answers a signed JWT
(RS256) naming the client as ``sub``, for the audience and issuer the
broker expects. Anything else gets the OAuth error answer
(``invalid_client``, ``unsupported_grant_type``) and never a token.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from pipeline.private_files import write_private_file

log = logging.getLogger(__name__)

CLIENT_ID = "o2o"
AUDIENCE = "o2o-kafka"
ISSUER = "o2o-local-issuer"
KEY_ID = "o2o-local-1"
TOKEN_PATH = "/token"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64url(number: int) -> str:
    return _b64url(number.to_bytes((number.bit_length() + 7) // 8, "big"))


@dataclass(frozen=True)
class IssuerFiles:
    """The issuer's files in the secure listener's folder."""

    folder: Path

    @property
    def key_file(self) -> Path:
        """The RSA signing key (PEM, PKCS#8)."""
        return self.folder / "oauth-key.pem"

    @property
    def jwks_file(self) -> Path:
        """The public key set the broker validates tokens with."""
        return self.folder / "jwks.json"

    @property
    def secret_file(self) -> Path:
        """The secret of the client :data:`CLIENT_ID` (O2O_KAFKA_OAUTH_CLIENT_SECRET_FILE)."""
        return self.folder / "oauth-client-secret"

    @property
    def jwks_url(self) -> str:
        """The ``file://`` URL of :attr:`jwks_file`, as the broker reads it."""
        return self.jwks_file.resolve().as_uri()

    def client_secret(self) -> str:
        """The client's secret."""
        return self.secret_file.read_text().strip()

    def signing_key(self) -> rsa.RSAPrivateKey:
        """The issuer's private key."""
        key = serialization.load_pem_private_key(self.key_file.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{self.key_file} does not hold an RSA key")
        return key


def ensure_issuer_files(folder: Path) -> IssuerFiles:
    """Create the signing key, its key set and the client secret once; later calls reuse them."""
    files = IssuerFiles(folder)
    if not files.secret_file.exists():
        write_private_file(files.secret_file, (secrets.token_urlsafe(24) + "\n").encode())
    if files.key_file.exists() and files.jwks_file.exists():
        return files
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = key.public_key().public_numbers()
    jwk = {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": KEY_ID}
    jwk |= {"n": _int_b64url(numbers.n), "e": _int_b64url(numbers.e)}
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private_file(files.key_file, pem)
    write_private_file(files.jwks_file, orjson.dumps({"keys": [jwk]}))
    log.info("wrote an OAuth signing key and its key set to %s", folder)
    return files


def sign_token(key: rsa.RSAPrivateKey, subject: str, lifetime: int, scope: str = "") -> str:
    """A JWT (RS256) for ``subject`` valid ``lifetime`` seconds from now."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "aud": AUDIENCE, "iss": ISSUER}
    claims |= {"iat": now, "exp": now + lifetime}
    if scope:
        claims["scope"] = scope
    header = _b64url(orjson.dumps({"alg": "RS256", "typ": "JWT", "kid": KEY_ID}))
    signing_input = f"{header}.{_b64url(orjson.dumps(claims))}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


def _client_of(headers: Any, form: dict[str, str]) -> tuple[str, str]:
    """The client id and secret of a token request: HTTP Basic first, else the form."""
    auth = headers.get("Authorization", "")
    if auth.startswith("Basic "):
        try:
            user, _, password = base64.b64decode(auth[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return "", ""
        return user, password
    return form.get("client_id", ""), form.get("client_secret", "")


class OAuthIssuer:
    """The client-credentials token endpoint on ``host:port`` (port 0: a free one), in a thread."""

    def __init__(self, files: IssuerFiles, host: str = "127.0.0.1", port: int = 0, lifetime: int = 3600):
        self.files = files
        self.lifetime = lifetime
        self.issued = 0
        self.refused = 0
        key, secret, issuer = files.signing_key(), files.client_secret(), self

        class TokenHandler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("Content-Length") or 0), 64 * 1024)
                raw = self.rfile.read(length).decode(errors="replace")
                form = {name: values[0] for name, values in parse_qs(raw).items()}
                client, given = _client_of(self.headers, form)
                if self.path.split("?")[0] != TOKEN_PATH:
                    self._answer(404, {"error": "not_found"})
                elif form.get("grant_type") != "client_credentials":
                    self._answer(400, {"error": "unsupported_grant_type"})
                elif client != CLIENT_ID or not hmac.compare_digest(given.encode(), secret.encode()):
                    issuer.refused += 1
                    self._answer(401, {"error": "invalid_client"})
                else:
                    issuer.issued += 1
                    token = sign_token(key, client, issuer.lifetime, form.get("scope", ""))
                    doc = {"access_token": token, "token_type": "Bearer", "expires_in": issuer.lifetime}
                    self._answer(200, doc)

            def _answer(self, status: int, doc: dict[str, Any]) -> None:
                body = orjson.dumps(doc)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.info("token endpoint: " + format, *args)

        self.server = ThreadingHTTPServer((host, port), TokenHandler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="oauth-issuer", daemon=True)

    @property
    def token_endpoint(self) -> str:
        """The URL clients ask for tokens (O2O_KAFKA_OAUTH_TOKEN_ENDPOINT)."""
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}{TOKEN_PATH}"

    def start(self) -> OAuthIssuer:
        """Serve in a background thread; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()


def oauth_client_settings(files: IssuerFiles, token_endpoint: str) -> dict[str, str]:
    """The O2O_ settings that switch a client of the secure listener from SCRAM to OAUTHBEARER."""
    return {
        "O2O_KAFKA_SASL_MECHANISM": "OAUTHBEARER",
        "O2O_KAFKA_OAUTH_TOKEN_ENDPOINT": token_endpoint,
        "O2O_KAFKA_OAUTH_CLIENT_ID": CLIENT_ID,
        "O2O_KAFKA_OAUTH_CLIENT_SECRET_FILE": str(files.secret_file),
    }
