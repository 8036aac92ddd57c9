"""How platform processes log in (app/mqtt/logins.py), on both databases."""

from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy import Engine

from app.core import db
from app.mqtt import logins
from app.mqtt.connection import BrokerAddress
from app.services import credentials

INGEST = credentials.INGEST_ACCOUNT


def test_credentials_in_the_url_win(engine: Engine) -> None:
    del engine
    address = BrokerAddress.parse("mqtt://someone:secret@broker:1883")
    assert logins.service_address(address, INGEST) == address


def test_a_service_logs_in_with_its_account_created_once(engine: Engine) -> None:
    del engine
    address = BrokerAddress.parse("mqtt://broker:1883")
    first = logins.service_address(address, INGEST)
    again = logins.service_address(address, INGEST)
    assert first.username == INGEST
    assert first.password and first.password == again.password
    with db.session_scope() as session:
        assert credentials.is_service_login(
            session=session, username=INGEST, password=first.password
        )
    assert first.certificate is None and not first.ca_pem  # plain MQTT: no TLS material


def test_tls_with_the_platform_ca_presents_a_service_certificate(engine: Engine) -> None:
    del engine
    login = logins.service_address(BrokerAddress.parse("mqtts://broker:8883"), INGEST)
    with db.session_scope() as session:
        assert login.ca_pem == credentials.ca_bundle(session)
    assert login.certificate is not None
    certificate = x509.load_pem_x509_certificate(login.certificate[0].encode())
    common_name = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert common_name == INGEST


def test_tls_with_another_ca_trusts_that_file_and_logs_in_by_password(
    engine: Engine, tmp_path: Path
) -> None:
    del engine
    ca_file = tmp_path / "other-ca.pem"
    ca_file.write_text("-----BEGIN CERTIFICATE-----\nnot checked here\n-----END CERTIFICATE-----\n")
    address = BrokerAddress.parse("mqtts://emqx.example.com:8883")
    login = logins.service_address(address, INGEST, ca_file=str(ca_file))
    assert login.ca_pem == ca_file.read_text()
    assert login.certificate is None
    assert login.username == INGEST and login.password


def test_the_shared_group_has_a_secret_suffix_every_worker_computes(engine: Engine) -> None:
    del engine
    group = logins.shared_group("iotdeck")
    assert group.startswith("iotdeck-") and len(group) > len("iotdeck-") + 8
    assert logins.shared_group("iotdeck") == group
    assert logins.shared_group("other") != group
    assert logins.shared_group("") == ""
