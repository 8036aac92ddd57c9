"""Settings: secrets refused outside demo mode, generated and kept in demo mode."""

from pathlib import Path

import pytest

from app.core.config import ConfigError, Settings


def test_missing_secret_is_refused_naming_the_variable(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, jwt_secret="", _env_file=None)
    with pytest.raises(ConfigError, match="IOTDECK_JWT_SECRET is not set"):
        settings.ensure_secret()


def test_short_secret_is_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, jwt_secret="x" * 31, _env_file=None)
    with pytest.raises(ConfigError, match="IOTDECK_JWT_SECRET is shorter than 32 bytes"):
        settings.ensure_secret()


def test_long_enough_secret_is_kept(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, jwt_secret="s" * 32, _env_file=None)
    settings.ensure_secret()
    assert settings.jwt_secret == "s" * 32
    assert not (tmp_path / "jwt_secret").exists()


def test_demo_generates_a_secret_once_and_reuses_it(tmp_path: Path) -> None:
    first = Settings(data_dir=tmp_path, demo=True, _env_file=None)
    first.ensure_secret()
    second = Settings(data_dir=tmp_path, demo=True, _env_file=None)
    second.ensure_secret()
    assert len(first.jwt_secret) >= 32
    assert first.jwt_secret == second.jwt_secret
    assert (tmp_path / "jwt_secret").stat().st_mode & 0o077 == 0


def test_database_defaults_to_sqlite_in_the_data_folder(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, _env_file=None)
    assert settings.database_url == f"sqlite:///{tmp_path / 'iotdeck.db'}"
    assert settings.is_sqlite


def test_environment_variables_and_comma_separated_origins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IOTDECK_DATABASE_URL", "postgresql+psycopg://db/iotdeck")
    monkeypatch.setenv("IOTDECK_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("IOTDECK_JWT_EXPIRE_HOURS", "2")
    settings = Settings(_env_file=None)
    assert settings.database_url == "postgresql+psycopg://db/iotdeck"
    assert not settings.is_sqlite
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.jwt_expire_hours == 2
