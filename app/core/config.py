"""One settings object for every process, read from `IOTDECK_*` variables and `.env`."""

import ipaddress
import secrets
import socket
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.core.errors import ValidationError
from app.core.intervals import parse_interval
from app.mqtt.rate_limit import per_second

MIN_SECRET_BYTES = 32


class ConfigError(Exception):
    """Settings that make starting unsafe or impossible; the message names the variable."""


class Settings(BaseSettings):
    """Every `IOTDECK_*` variable; README's configuration table lists the same names."""

    model_config = SettingsConfigDict(env_prefix="IOTDECK_", env_file=".env", extra="ignore")

    data_dir: Path = Path("data")
    database_url: str = ""
    jwt_secret: str = ""
    jwt_expire_hours: float = Field(default=12, gt=0)
    # the demo accounts `seed`/`--demo` create; unset: each gets its own generated password
    admin_password: str = ""
    operator_password: str = ""
    viewer_password: str = ""
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    demo: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    cors_origins: Annotated[list[str], NoDecode] = []
    graphql_max_depth: int = Field(default=10, ge=2)
    # aliases in one document, and its cost (every field 1, a list field times its page)
    graphql_max_aliases: int = Field(default=30, ge=1)
    graphql_max_cost: int = Field(default=50_000, ge=1)
    # introspection and GraphiQL; unset: on in demo mode only
    graphql_introspection: bool | None = None
    # live GraphQL subscriptions one WebSocket, and one user over all of them, may hold
    graphql_max_subscriptions_per_connection: int = Field(default=50, ge=1)
    graphql_max_subscriptions_per_user: int = Field(default=200, ge=1)
    max_page_size: int = Field(default=1000, ge=1)
    # requests per client IP on every HTTP route and GraphQL operation (`limits` notation)
    rate_limit: str = "100/second"
    # reverse proxies whose X-Forwarded-For names the client (addresses or CIDR networks)
    trusted_proxies: Annotated[list[str], NoDecode] = []
    # tokens signed with these keys are still accepted until they expire (rotation)
    jwt_previous_secrets: Annotated[list[str], NoDecode] = []
    # a signed-in browser session ends after this much inactivity
    session_idle_minutes: float = Field(default=60, gt=0)
    # HTTPS for `serve`: PEM certificate chain and private key
    tls_cert: str = ""
    tls_key: str = ""
    # single sign-on with an OpenID Connect provider; unset issuer: off
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: str = ""
    # the ID-token/userinfo claim holding the role(s), and the button's label
    oidc_role_claim: str = "roles"
    # claim value -> role, e.g. "iot-admins=ADMIN,iot-ops=OPERATOR"; role names map to themselves
    oidc_role_map: Annotated[dict[str, str], NoDecode] = {}
    oidc_name: str = "single sign-on"
    # a folder of dashboard spec files (*.json) provisioned read-only at start; unset: none
    dashboards_dir: str = ""
    # webhooks may reach loopback, private, link-local and metadata addresses (SPEC 8.2)
    webhook_allow_private: bool = False
    # logs (docs/operations.md): the level, and json (one object a line) or text; unset
    # format: text in demo mode, json otherwise
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] | None = None
    # Redis pub/sub and streams between processes; unset: in-process (one process only)
    redis_url: str = ""
    # devices fall in this many partitions of the workers' streams (app/core/streams.py); every
    # process of a deployment must agree on it
    partitions: int = Field(default=16, ge=1, le=1024)
    # MQTT: an external broker (mqtt:// or mqtts://) or, when unset, the embedded one
    mqtt_url: str = ""
    mqtt_embedded_port: int = Field(default=1883, ge=0, le=65535)
    mqtt_protocol: Literal["5", "3.1.1"] = "5"
    # the CA that signs an external mqtts:// broker's certificate; unset: the platform CA
    mqtt_ca_file: str = ""
    # `iotdeck mqtt-broker` (SPEC 8.1): Mosquitto with per-device credentials and ACLs
    broker_host: str = "127.0.0.1"
    broker_port: int = Field(default=1883, ge=1, le=65535)
    broker_tls_port: int = Field(default=8883, ge=0, le=65535)
    # names devices use to reach the broker: its TLS certificate's subject alternative names
    broker_hostnames: Annotated[list[str], NoDecode] = ["localhost", "127.0.0.1"]
    broker_sync_seconds: float = Field(default=2.0, gt=0, le=10)
    # EMQX's HTTP authenticator/authorizer send it in X-Iotdeck-Secret; unset: /mqtt/* is 404
    emqx_secret: str = ""
    # per-device rate limit in ingest: `limits` notation, and how many may come at once
    device_rate_limit: str = "10/second"
    device_rate_burst: int = Field(default=600, ge=1)
    # ingest worker (`serve` runs one in-process unless this is false or --no-ingest)
    ingest: bool = True
    # the rule evaluator, notification and command dispatchers and periodic jobs: `serve`
    # runs them in-process unless this is false or --no-workers (`iotdeck worker` then)
    workers: bool = True
    ingest_client_id: str = Field(default_factory=lambda: f"iotdeck-ingest-{socket.gethostname()}")
    ingest_shared_group: str = ""
    ingest_batch_messages: int = Field(default=2000, ge=1)
    ingest_batch_ms: int = Field(default=200, ge=1)
    # `iotdeck ingest` serves /metrics and /health/live on this port (on IOTDECK_HOST); 0: off
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    offline_after: int = Field(default=300, ge=1)
    # ingest writes devices' last contact at most this often, in seconds (app/services/last_seen.py)
    last_seen_flush: float = Field(default=5, gt=0)
    retention_days: int = Field(default=90, ge=1)
    # PostgreSQL storage: TimescaleDB when the server preloads it (auto), required (on),
    # or plain tables (off); see app/core/storage.py
    timescaledb: Literal["auto", "on", "off"] = "auto"
    # TimescaleDB compresses chunks older than this ("7 days", "12h", ...)
    compress_after: str = "7 days"
    # alert notifications, sent by `serve`'s dispatcher (docs/notifications.md):
    # the SMTP server for `notify email`: smtp:// (plain), smtp+starttls:// (STARTTLS) or
    # smtps:// (implicit TLS), with [user:pass@]host[:port]; unset: e-mails fail, say why
    smtp_url: str = ""
    smtp_from: str = "iotdeck@localhost"
    # HMAC-SHA256 key signing webhook bodies; unset: derived from the JWT secret
    webhook_secret: str = ""
    # longest one attempt (an SMTP exchange or a webhook call) may take, in seconds
    notification_timeout: float = Field(default=10, gt=0)
    # wait before the first retry of a failed notification, in seconds; doubles each time
    notification_retry_seconds: float = Field(default=30, gt=0)
    # seconds from SIGTERM (or SIGINT) to exit: work taken finishes within it (app/core/shutdown.py)
    shutdown_timeout: float = Field(default=25, gt=0)

    @field_validator(
        "cors_origins", "broker_hostnames", "trusted_proxies", "jwt_previous_secrets", mode="before"
    )
    @classmethod
    def _split_list(cls, value: object) -> object:
        # a comma-separated list reads better in an environment file than JSON
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"IOTDECK_TRUSTED_PROXIES: '{entry}' is not an address or a network"
                ) from None
        return value

    @field_validator("oidc_role_map", mode="before")
    @classmethod
    def _split_map(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs = [item.partition("=") for item in value.split(",") if item.strip()]
        if any(not sep or not key.strip() or not role.strip() for key, sep, role in pairs):
            raise ValueError("IOTDECK_OIDC_ROLE_MAP: write claim-value=ROLE pairs, comma-separated")
        return {key.strip(): role.strip().upper() for key, _, role in pairs}

    @field_validator("oidc_role_map")
    @classmethod
    def _check_roles(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value.values()) - {"ADMIN", "OPERATOR", "VIEWER"})
        if unknown:
            raise ValueError(f"IOTDECK_OIDC_ROLE_MAP: unknown role {unknown[0]}")
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _any_case(cls, value: object, info: ValidationInfo) -> object:
        # `debug` and `DEBUG`, `JSON` and `json` alike; an empty IOTDECK_LOG_FORMAT is unset
        if not isinstance(value, str):
            return value
        if info.field_name == "log_level":
            return value.strip().upper()
        return value.strip().lower() or None

    @field_validator("compress_after")
    @classmethod
    def _check_interval(cls, value: str) -> str:
        try:
            parse_interval(value, "IOTDECK_COMPRESS_AFTER")
        except ValidationError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("device_rate_limit", "rate_limit")
    @classmethod
    def _check_rate(cls, value: str, info: ValidationInfo) -> str:
        try:
            per_second(value)
        except ValueError as exc:
            raise ValueError(f"IOTDECK_{str(info.field_name).upper()}: {exc}") from None
        return value

    @property
    def jwt_keys(self) -> list[str]:
        """The key signing tokens, then the previous keys still accepted (rotation)."""
        return [self.jwt_secret, *self.jwt_previous_secrets]

    @property
    def introspection(self) -> bool:
        """Whether GraphQL introspection and GraphiQL are served."""
        return self.demo if self.graphql_introspection is None else self.graphql_introspection

    @property
    def compress_after_seconds(self) -> int:
        """IOTDECK_COMPRESS_AFTER in seconds."""
        return parse_interval(self.compress_after)

    @model_validator(mode="after")
    def _default_database(self) -> "Settings":
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'iotdeck.db'}"
        return self

    @property
    def resolved_log_format(self) -> str:
        """IOTDECK_LOG_FORMAT, or its default: text in demo mode, json otherwise."""
        return self.log_format or ("text" if self.demo else "json")

    @property
    def is_sqlite(self) -> bool:
        """True when the database is the embedded SQLite file."""
        return self.database_url.startswith("sqlite")

    def ensure_secret(self) -> None:
        """Check the JWT secret; demo mode generates one and keeps it in the data folder."""
        if len(self.jwt_secret.encode()) >= MIN_SECRET_BYTES:
            return
        if not self.demo:
            state = "is not set" if not self.jwt_secret else "is shorter than 32 bytes"
            raise ConfigError(
                f"IOTDECK_JWT_SECRET {state}: set it to a random string of at least "
                f"{MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`), or run with --demo"
            )
        secret_file = self.data_dir / "jwt_secret"
        if not secret_file.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            secret_file.write_text(secrets.token_hex(32))
            secret_file.chmod(0o600)
        self.jwt_secret = secret_file.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
