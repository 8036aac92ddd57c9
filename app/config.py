"""One settings object for every process, read from `IOTDECK_*` variables and `.env`."""

import secrets
import socket
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.errors import ValidationError
from app.intervals import parse_interval
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
    max_page_size: int = Field(default=1000, ge=1)
    log_level: str = "INFO"
    # Redis pub/sub between processes; unset: the in-process bus (one process only)
    redis_url: str = ""
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
    ingest_client_id: str = Field(default_factory=lambda: f"iotdeck-ingest-{socket.gethostname()}")
    ingest_shared_group: str = ""
    ingest_batch_messages: int = Field(default=2000, ge=1)
    ingest_batch_ms: int = Field(default=200, ge=1)
    offline_after: int = Field(default=300, ge=1)
    retention_days: int = Field(default=90, ge=1)
    # PostgreSQL storage: TimescaleDB when the server preloads it (auto), required (on),
    # or plain tables (off); see app/storage.py
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

    @field_validator("cors_origins", "broker_hostnames", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        # a comma-separated list reads better in an environment file than JSON
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("compress_after")
    @classmethod
    def _check_interval(cls, value: str) -> str:
        try:
            parse_interval(value, "IOTDECK_COMPRESS_AFTER")
        except ValidationError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("device_rate_limit")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        try:
            per_second(value)
        except ValueError as exc:
            raise ValueError(f"IOTDECK_DEVICE_RATE_LIMIT: {exc}") from None
        return value

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
