"""URLs shown in logs, errors and CLI output never carry their password."""

import pytest

from app.core.config import ConfigError
from app.core.redaction import UNPARSEABLE, redacted
from app.mqtt.connection import BrokerAddress


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+psycopg://iot:s3cr3t@db.example.com:5432/iotdeck",
            "postgresql+psycopg://iot:***@db.example.com:5432/iotdeck",
        ),
        ("redis://:s3cr3t@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("mqtts://device:s3cr3t@[::1]:8883", "mqtts://device:***@[::1]:8883"),
        ("smtp+starttls://a%40b.org:p%2Fs3cr3t@mail:587", "smtp+starttls://a%40b.org:***@mail:587"),
        ("mqtt://u:s3cr3t@", "mqtt://u:***@"),
    ],
)
def test_the_password_is_replaced_and_the_rest_kept(url: str, shown: str) -> None:
    assert redacted(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///data/iotdeck.db",
        "sqlite:////var/lib/iotdeck/iotdeck.db",
        "redis://localhost:6379/0",
        "mqtt://device@broker:1883",
    ],
)
def test_a_url_without_a_password_is_shown_as_it_is(url: str) -> None:
    assert redacted(url) == url


def test_the_query_is_dropped_as_it_may_hold_a_secret() -> None:
    url = "postgresql://iot@db/iotdeck?password=s3cr3t#s3cr3t"
    assert redacted(url) == "postgresql://iot@db/iotdeck"


@pytest.mark.parametrize(
    "url",
    [
        "s3cr3t",  # a password in the URL's variable
        "redis://u:s3cr3t@host:notaport/0",
        "redis://u:s3/cr3t@host",  # an unescaped `/` splits the password
        "http://[::1:s3cr3t@x",  # an unbalanced bracket: urlsplit raises
    ],
)
def test_a_malformed_url_is_never_echoed(url: str) -> None:
    shown = redacted(url)
    assert shown == UNPARSEABLE
    assert "cr3t" not in shown


def test_a_malformed_mqtt_url_error_keeps_its_password_out() -> None:
    with pytest.raises(ConfigError, match="IOTDECK_MQTT_URL") as raised:
        BrokerAddress.parse("mqtt://u:s3cr3t@")
    assert "s3cr3t" not in str(raised.value)
