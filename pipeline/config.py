"""Typed settings for every command and stage.

Values come, highest priority first, from: keyword arguments (tests, the CLI),
environment variables prefixed ``O2O_`` (``O2O_BOOTSTRAP_SERVERS``,
``O2O_CLICKHOUSE_DSN``, ...), a TOML config file (``O2O_CONFIG``, else
``o2o.toml`` in the working directory when present), then the defaults below.
Everything is validated once, at start-up, by :func:`load_settings`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from pipeline.errors import ConfigError
from pipeline.kafka.security import KafkaSecuritySettings
from pipeline.private_files import read_secret

ATTRIBUTION_MODELS = (
    "first_touch",
    "last_touch",
    "last_non_direct",
    "linear",
    "time_decay",
    "u_shaped",
    "w_shaped",
    "markov",
    "shapley",
    "custom",
)
DEFAULT_MODELS = ATTRIBUTION_MODELS[:-1]  # custom needs a rules file; markov/shapley credit once fitted
STAGES = ("ingest", "identity", "journeys", "attribution", "sink", "activation")
"""Every stage; ``run all`` starts activation only when rules are configured (:attr:`Settings.stages`)."""
# query-string parameters whose values are hashed in URLs (pipeline/ingest/url_pii.py)
URL_PII_PARAMS = ("email", "e", "mail", "email_address", "phone", "tel", "telephone", "mobile", "msisdn")
DEFAULT_SALT = "o2o-development-salt"  # public: fine for the demo, never for real customers


def default_salt_warning(settings: Settings, listen_host: str | None = None) -> str | None:
    """The warning to log where PII is hashed (ingest, the collector) while the salt is the public default.

    Outside the local stack (Kafka, or the collector's ``listen_host``, not on
    loopback) the default salt is refused with a ConfigError unless
    ``allow_default_salt`` is set.
    """
    if settings.salt != DEFAULT_SALT:
        return None
    remote = [h for h in _hosts(settings.bootstrap_servers) if not _is_loopback(h)]
    if listen_host is not None and not _is_loopback(listen_host):
        remote.append(f"{listen_host} (the collector's address)")
    if remote and not settings.allow_default_salt:
        raise ConfigError(
            f"O2O_SALT is the public default and {', '.join(remote)} is not on this machine: set O2O_SALT "
            "to a secret of your own before real customers' data comes in (O2O_ALLOW_DEFAULT_SALT=true "
            "allows the default, for a test cluster)"
        )
    return (
        "O2O_SALT is the public default: anyone with a list of e-mail addresses or phone numbers can "
        "recompute the hashed identifiers; set your own salt before real customers' data comes in "
        "(changing it later changes every hashed identifier)"
    )


def _hosts(servers: str) -> list[str]:
    """The host of each `host:port` (`[v6]:port`, optionally after `PROTOCOL://`) of a bootstrap list."""
    hosts = []
    for server in filter(None, (part.strip() for part in servers.split(","))):
        server = server.split("://", 1)[-1]
        host = server[1 : server.index("]")] if server.startswith("[") else server.rsplit(":", 1)[0]
        hosts.append(host)
    return hosts


def _is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (names are not resolved)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _comma_list(value: Any) -> Any:
    """A list setting given as one comma-separated string (an environment variable) as a list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class _TomlSource(PydanticBaseSettingsSource):
    """Reads the optional TOML config file (flat keys, same names as the fields)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if path is not None:
            try:
                with path.open("rb") as fh:
                    self._data = tomllib.load(fh)
            except FileNotFoundError as exc:
                raise ConfigError(f"config file {path} does not exist") from exc
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
            unknown = set(self._data) - set(settings_cls.model_fields)
            if unknown:
                raise ConfigError(f"config file {path}: unknown settings {sorted(unknown)}")

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _config_file() -> Path | None:
    named = os.environ.get("O2O_CONFIG")
    if named:
        return Path(named)
    local = Path("o2o.toml")
    return local if local.exists() else None


class Settings(BaseSettings, KafkaSecuritySettings):
    """Every tunable of the pipeline, with its default and its validation.

    The Kafka security settings (``kafka_security_protocol``, ``kafka_sasl_*``,
    ``kafka_ssl_*``, ``kafka_oauth_*``) are declared, and checked together, in
    :class:`~pipeline.kafka.security.KafkaSecuritySettings`.
    """

    model_config = SettingsConfigDict(env_prefix="O2O_", extra="forbid", validate_default=True)

    # Kafka
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    topic_prefix: str = Field("o2o.", description="prefix of every topic name")
    partitions: int = Field(4, ge=1, le=1024, description="partitions of new topics")
    replication_factor: int = Field(1, ge=1, le=16, description="replication of new topics")
    consumer_group_prefix: str = Field("", description="prefix of consumer group ids (default: topic prefix)")
    raw_retention_days: float = Field(
        7.0, gt=0, description="how long the raw topics keep what producers sent (rebuilds, replays)"
    )
    retention_days: float = Field(7.0, gt=0, description="how long the topics between stages keep records")
    group_session_timeout_seconds: float = Field(
        10.0,
        ge=1,
        le=300,
        description="a group member silent this long (a crashed stage) loses its partitions to the others",
    )
    max_poll_interval_seconds: float = Field(
        300.0,
        ge=1,
        le=86400,
        description="a stage that does not ask for input this long (the sink retrying a ClickHouse that "
        "is away) leaves its group; its partitions move on and its next commit is refused",
    )

    # Local broker (o2o stack)
    state_dir: Path = Field(Path(".state"), description="folder for broker data, logs, chDB data")
    kafka_version: str = Field("4.4.0", description="Apache Kafka release run by `o2o stack`")
    kafka_port: int = Field(9092, ge=1, le=65535, description="broker port of `o2o stack`")
    kafka_controller_port: int = Field(0, ge=0, le=65535, description="controller port (0: broker port + 1)")
    kafka_heap: str = Field("768m", description="maximum Java heap of the local broker")
    kafka_secure_port: int = Field(
        0, ge=0, le=65535, description="SASL_SSL port of `o2o stack up --secure` (0: broker port + 2)"
    )

    # ClickHouse
    clickhouse_dsn: str = Field(
        "", description="chdb://<folder> or http(s)://host:8123 (default: chdb in state_dir)"
    )
    clickhouse_database: str = Field("o2o", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    clickhouse_cluster: str = Field(
        "", pattern=r"^([A-Za-z_][A-Za-z0-9_.-]*)?$", description="cluster of the migrations' ON CLUSTER DDL"
    )
    clickhouse_password_file: Path | None = Field(
        None, description="file holding the ClickHouse server's password (a mounted secret)"
    )
    query_max_seconds: float = Field(30.0, gt=0, description="a read-only query (o2o sql, ...) stops after")
    query_max_memory_mb: int = Field(1024, ge=16, description="memory a read-only query may use")
    query_max_result_rows: int = Field(1_000_000, ge=1, description="rows a read-only query may return")

    # Ingest
    salt: str = Field(DEFAULT_SALT, min_length=8, description="salt of PII hashes")
    allow_default_salt: bool = Field(
        False, description="accept the public default salt with Kafka or the collector off this machine"
    )
    max_event_bytes: int = Field(1_000_000, ge=1024)
    max_future_hours: float = Field(23.0, ge=0)
    max_age_days: float = Field(3650.0, gt=0, description="older events are dead letters (backfills!)")
    phone_region: str = Field("", pattern=r"^([A-Za-z]{2})?$", description="region of national phone numbers")
    dedup_window_minutes: float = Field(1440.0, ge=0, description="exact duplicates dropped within this")
    dedup_max_ids: int = Field(2_000_000, ge=1, description="memory bound of the duplicate window")
    keep_without_analytics_consent: bool = Field(
        True, description="store events with analytics consent false (never used for journeys)"
    )

    # HTTP collector
    collector_host: str = Field("127.0.0.1", description="address `o2o collector` listens on")
    collector_port: int = Field(8080, ge=1, le=65535)
    collector_write_keys: str = Field("", description="comma-separated SOURCE=KEY pairs (secret)")
    collector_max_body_bytes: int = Field(0, ge=0, description="0: 16 MiB, or max_event_bytes if larger")
    collector_delivery_timeout_ms: int = Field(30_000, ge=1000)
    collector_body_key_max_bytes: int = Field(
        512 * 1024, ge=1024, description="bytes read, gzip or not, before a write key in the body is checked"
    )
    collector_max_batch_events: int = Field(5000, ge=1, description="events (or messages) per request")
    collector_read_timeout_seconds: float = Field(10.0, gt=0, description="to receive a whole request body")
    collector_rate_per_address: float = Field(50.0, ge=0, description="requests/s per client address; 0: off")
    collector_rate_per_key: float = Field(1000.0, ge=0, description="requests/s per write key; 0: off")
    collector_concurrency_per_address: int = Field(
        16, ge=0, description="requests at once per address; 0: off"
    )
    collector_concurrency_per_key: int = Field(
        256, ge=0, description="requests at once per write key; 0: off"
    )
    collector_cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="origins browsers may post from (comma-separated; * for any); none: no CORS"
    )

    # Identity
    identity_max_persons_per_id: int = Field(
        5, ge=1, description="an identifier seen with more persons (a shared tablet) stops linking"
    )
    identity_max_ids_per_person: int = Field(
        1000,
        ge=1,
        description="identifiers one person may hold; past it an event's new ones link nothing "
        "(at most what fits a state record, 600 bytes each in 2 x max_event_bytes)",
    )
    identity_workers: int = Field(
        1,
        ge=1,
        le=64,
        description="identity processes `run all` starts; above 1 graph updates go through one partition",
    )
    workers_ingest: int = Field(1, ge=1, le=64, description="ingest processes `run all` starts")
    workers_journeys: int = Field(1, ge=1, le=64, description="journeys processes `run all` starts")
    workers_attribution: int = Field(1, ge=1, le=64, description="attribution processes `run all` starts")
    workers_activation: int = Field(1, ge=1, le=64, description="activation processes `run all` starts")
    workers_sink: int = Field(1, ge=1, le=64, description="sink processes `run all` starts")
    reorder_idle_seconds: float = Field(
        30.0,
        gt=0,
        description="a stream held for reordering stops holding the others after this long without "
        "an event or a progress mark from ingest (ingest down)",
    )
    blocked_id_patterns: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="regular expressions of identifier values that never link (whole value)"
    )
    url_pii_params: Annotated[tuple[str, ...], NoDecode] = Field(
        URL_PII_PARAMS,
        description="query-string parameters of URLs whose values are hashed, whatever they hold",
    )

    # Journeys
    session_timeout_minutes: float = Field(30.0, gt=0)
    session_max_hours: float = Field(24.0, gt=0)
    visit_timeout_minutes: float = Field(30.0, gt=0)
    allowed_lateness_minutes: float = Field(
        60.0, ge=0, description="an event up to this much older than its partition's newest is placed"
    )
    idle_partition_seconds: float = Field(
        60.0,
        gt=0,
        description="a partition without input this long advances its watermark by the clock, over time "
        "identity vouched for",
    )
    channel_rules: Path | None = Field(None, description="TOML file extending the channel grouping")

    # Attribution
    lookback_days: float = Field(30.0, gt=0)
    half_life_days: float = Field(7.0, gt=0)
    path_reset_after_conversion: bool = Field(
        True, description="a conversion's path starts after the person's previous conversion"
    )
    models: Annotated[tuple[str, ...], NoDecode] = Field(DEFAULT_MODELS)
    custom_rules: Path | None = Field(None, description="TOML rules of the custom model (needed for it)")

    # Activation
    activation_rules: Path | None = Field(
        None, description="TOML file of activation rules; the activation stage runs when it is set"
    )
    consent_default: str = Field(
        "analytics=granted,marketing=denied,personalisation=denied",
        description="what an unknown consent purpose means: denied or granted, for all or per purpose",
    )

    # Sink
    sink_batch_rows: int = Field(20_000, ge=1)
    sink_flush_seconds: float = Field(0.5, gt=0)

    metrics_port: int = Field(
        0, ge=0, le=65530, description="0: off; stage n serves /metrics on port + n (copy c: port + n + 6c)"
    )
    metrics_host: str = Field("127.0.0.1", description="address of the stages' /metrics")
    lag_check_seconds: float = Field(
        30.0, ge=1, le=3600, description="how often a running stage measures its own consumer lag"
    )
    lag_alert_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="alert when a stage's oldest unacknowledged record is older than this share of "
        "its topic's retention",
    )

    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")

    fault_at: str = Field(
        "",
        pattern=r"^([a-z]+:[a-z_]+(:[0-9]+)?(,[a-z]+:[a-z_]+(:[0-9]+)?)*)?$",
        description="test hook: STAGE:POINT[:N],... kills the stage process at the Nth pass of POINT",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls, _config_file()))

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: Any) -> Any:
        value = _comma_list(value)
        unknown = [m for m in value if m not in ATTRIBUTION_MODELS]
        if unknown:
            raise ValueError(f"unknown attribution models {unknown}; known: {', '.join(ATTRIBUTION_MODELS)}")
        if not value:
            raise ValueError("at least one attribution model is needed")
        return tuple(value)

    @field_validator("consent_default")
    @classmethod
    def _check_consent_default(cls, value: str) -> str:
        consent_defaults(value)
        return value

    @field_validator("fault_at")
    @classmethod
    def _check_fault_points(cls, value: str) -> str:
        from pipeline.runtime.faults import parse_plan

        parse_plan(value)
        return value

    @field_validator("collector_cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        value = _comma_list(value)
        for origin in value:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], or *)")
        return tuple(value)

    @field_validator("url_pii_params", mode="before")
    @classmethod
    def _split_params(cls, value: Any) -> Any:
        value = _comma_list(value)
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+", name):
                raise ValueError(f"{name!r} is not a query-string parameter name")
        return tuple(value)

    @field_validator("blocked_id_patterns", mode="before")
    @classmethod
    def _compile_patterns(cls, value: Any) -> Any:
        value = _comma_list(value)
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return tuple(value)

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{server!r} is not host:port")
        return value

    @field_validator("clickhouse_dsn")
    @classmethod
    def _check_dsn(cls, value: str) -> str:
        if value and not value.startswith(("chdb://", "http://", "https://", "clickhouse://")):
            raise ValueError("must start with chdb://, http://, https:// or clickhouse://")
        return value

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        self.state_dir = self.state_dir.expanduser().resolve()
        if "custom" in self.models:
            if self.custom_rules is None:
                raise ValueError("the custom model needs O2O_CUSTOM_RULES (a TOML rules file)")
            from pipeline.attribution.custom import load_rules

            load_rules(self.custom_rules)  # fail at start-up, with the file's problems named
        if self.channel_rules is not None:
            from pipeline.journeys.channels import load_channel_rules

            load_channel_rules(self.channel_rules)
        if self.activation_rules is not None:
            from pipeline.activation.rules import load_activation_rules

            load_activation_rules(self.activation_rules)
        if not self.clickhouse_dsn:
            self.clickhouse_dsn = f"chdb://{self.state_dir / 'clickhouse'}"
        if self.max_poll_interval_seconds < self.group_session_timeout_seconds:
            raise ValueError(
                "O2O_MAX_POLL_INTERVAL_SECONDS must be at least O2O_GROUP_SESSION_TIMEOUT_SECONDS "
                f"({self.max_poll_interval_seconds} < {self.group_session_timeout_seconds}): Kafka "
                "clients refuse it"
            )
        if self.workers_sink > 1 and self.embedded_clickhouse:
            raise ValueError(
                "O2O_WORKERS_SINK above 1 needs a ClickHouse server DSN (http(s)://...): the embedded "
                "chDB engine belongs to one process"
            )
        if self.clickhouse_cluster and self.embedded_clickhouse:
            raise ValueError(
                "O2O_CLICKHOUSE_CLUSTER needs a ClickHouse server DSN (http(s)://...), not chdb://"
            )
        if self.clickhouse_password_file is not None:
            if self.embedded_clickhouse or urlsplit(self.clickhouse_dsn).password:
                raise ValueError(
                    "O2O_CLICKHOUSE_PASSWORD_FILE needs a server DSN without a password "
                    "(http(s)://user@host:8123)"
                )
            read_secret(self.clickhouse_password_file, "O2O_CLICKHOUSE_PASSWORD_FILE")
        if not self.kafka_controller_port:
            self.kafka_controller_port = self.kafka_port + 1
        if not self.kafka_secure_port:
            self.kafka_secure_port = self.kafka_port + 2
        if not self.consumer_group_prefix:
            self.consumer_group_prefix = self.topic_prefix
        return self

    @property
    def embedded_clickhouse(self) -> bool:
        """True when ClickHouse is the in-process chDB engine."""
        return self.clickhouse_dsn.startswith("chdb://")

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages ``run all`` starts: all of them, activation only when rules are configured."""
        return STAGES if self.activation_rules is not None else tuple(s for s in STAGES if s != "activation")

    def workers(self, stage: str) -> int:
        """How many processes of ``stage`` `run all` starts (``O2O_WORKERS_JOURNEYS`` and the like)."""
        if stage == "identity":
            return self.identity_workers
        return int(getattr(self, f"workers_{stage}"))

    @property
    def consent_defaults(self) -> dict[str, bool]:
        """Each consent purpose's meaning when nothing was stated: True for granted."""
        return consent_defaults(self.consent_default)

    def topic(self, name: str) -> str:
        """The full name of a pipeline topic, prefix included."""
        return f"{self.topic_prefix}{name}"

    def group(self, stage: str) -> str:
        """The consumer group id of a stage."""
        return f"{self.consumer_group_prefix}{stage}"


BUILT_IN_CONSENT = {"analytics": True, "marketing": False, "personalisation": False}


def consent_defaults(value: str) -> dict[str, bool]:
    """``denied``, ``granted`` or ``purpose=denied|granted,...`` as a flag per purpose.

    Purposes a list leaves out keep the built-in defaults (analytics granted,
    marketing and personalisation denied).
    """
    text = value.strip().lower()
    if text in ("denied", "granted"):
        return dict.fromkeys(BUILT_IN_CONSENT, text == "granted")
    out = dict(BUILT_IN_CONSENT)
    for part in filter(None, (p.strip() for p in text.split(","))):
        purpose, _, meaning = (x.strip() for x in part.partition("="))
        if purpose not in BUILT_IN_CONSENT or meaning not in ("denied", "granted"):
            raise ValueError(
                f"{part!r}: expected denied, granted or purpose=denied|granted with purposes "
                + ", ".join(BUILT_IN_CONSENT)
            )
        out[purpose] = meaning == "granted"
    return out


def read_toml_file(path: Path, what: str) -> dict[str, Any]:
    """Parse a rules file; a missing or malformed file is a :class:`ConfigError` naming ``what``."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{what}: {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what}: {path} is not valid TOML: {exc}") from None


# Read elsewhere, not settings: the config file and the Kafka download cache.
OTHER_VARIABLES = frozenset({"O2O_CONFIG", "O2O_KAFKA_DIST_CACHE"})


def load_settings(**overrides: Any) -> Settings:
    """Build and validate the settings, turning validation errors into one clear ConfigError."""
    known = {f"O2O_{name.upper()}" for name in Settings.model_fields} | OTHER_VARIABLES
    unknown = sorted(k for k in os.environ if k.startswith("O2O_") and k not in known)
    if unknown:
        raise ConfigError(f"unknown settings in the environment: {', '.join(unknown)} (misspelt?)")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            lines.append(f"  O2O_{field.upper()}: {err['msg']}")
        raise ConfigError("invalid settings:\n" + "\n".join(lines)) from None
    except SettingsError as exc:
        raise ConfigError(f"invalid settings: {exc}") from None
