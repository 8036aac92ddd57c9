"""Single sign-on: which role a provider's claims map to, and which claims are refused."""

import pytest

from app.core.config import Settings
from app.core.models import Role
from app.web.oidc import (
    SsoError,
    SsoFailure,
    claim_values,
    failure_message,
    identity_from_claims,
    map_role,
)

ROLE_MAP = {"iot-admins": "ADMIN", "iot-ops": "OPERATOR", "iot-readers": "VIEWER"}


def _role(value: object, role_map: dict[str, str] = ROLE_MAP) -> Role:
    return map_role({"roles": value}, claim="roles", role_map=role_map)


def _settings(**overrides: object) -> Settings:
    return Settings(
        oidc_issuer="https://id.example.com",
        oidc_client_id="iotdeck",
        oidc_client_secret="s" * 32,
        oidc_role_map="iot-admins=ADMIN,iot-ops=operator",
        **overrides,
    )


@pytest.mark.parametrize(
    ("value", "role"),
    [
        ("iot-admins", Role.ADMIN),
        (["iot-ops"], Role.OPERATOR),
        (["iot-readers"], Role.VIEWER),
        (["iot-readers", "iot-admins", "iot-ops"], Role.ADMIN),  # the highest wins
        (["iot-ops", "unrelated"], Role.OPERATOR),
    ],
)
def test_mapped_values_give_the_highest_role(value: object, role: Role) -> None:
    assert _role(value) == role


@pytest.mark.parametrize("value", ["admin", "Admin", ["OPERATOR", "viewer"], ["Operator"]])
def test_role_names_map_to_themselves_in_any_case(value: object) -> None:
    expected = Role.ADMIN if value in ("admin", "Admin") else Role.OPERATOR
    assert _role(value, role_map={}) == expected


@pytest.mark.parametrize(
    "value", [None, [], "", "unrelated", ["IOT-ADMINS"], 42, {"iot-admins": True}, [None, 7]]
)
def test_nothing_mapped_is_viewer(value: object) -> None:
    # map keys match exactly: a provider's group "IOT-ADMINS" is not "iot-admins"
    assert _role(value) == Role.VIEWER


def test_the_map_can_demote_a_role_name() -> None:
    # an operator who maps the provider's "admin" group to OPERATOR gets exactly that
    assert _role(["admin"], role_map={"admin": "OPERATOR"}) == Role.OPERATOR


def test_claim_as_written_wins_over_a_dotted_path() -> None:
    # Auth0 names custom claims with URLs, dots included
    claims = {"https://iotdeck.example/roles": ["iot-admins"]}
    assert claim_values(claims, "https://iotdeck.example/roles") == ["iot-admins"]


def test_dotted_claim_reads_a_nested_claim() -> None:
    # Keycloak puts realm roles under realm_access.roles
    claims = {"realm_access": {"roles": ["offline_access", "iot-ops"]}}
    role = map_role(claims, claim="realm_access.roles", role_map=ROLE_MAP)
    assert role == Role.OPERATOR
    assert claim_values({"realm_access": ["x"]}, "realm_access.roles") == []


def test_identity_takes_email_name_and_the_configured_claim() -> None:
    settings = _settings(oidc_role_claim="groups")
    claims = {
        "email": " Ada@Example.COM ",
        "email_verified": True,
        "name": "Ada",
        "groups": ["iot-ops"],
        "roles": ["iot-admins"],  # not the configured claim
    }
    identity = identity_from_claims(claims, settings)
    assert (identity.email, identity.name, identity.role) == (
        "ada@example.com",
        "Ada",
        Role.OPERATOR,  # "operator" in IOTDECK_OIDC_ROLE_MAP reads as OPERATOR
    )


def test_absent_email_verified_is_accepted_but_false_is_refused() -> None:
    settings = _settings()
    assert identity_from_claims({"email": "a@example.com"}, settings).role == Role.VIEWER
    for verified in (False, "false"):
        with pytest.raises(SsoError) as refused:
            identity_from_claims({"email": "a@example.com", "email_verified": verified}, settings)
        assert refused.value.failure == SsoFailure.EMAIL


@pytest.mark.parametrize("claims", [{}, {"email": ""}, {"email": ["a@example.com"]}])
def test_missing_email_is_refused(claims: dict[str, object]) -> None:
    with pytest.raises(SsoError) as refused:
        identity_from_claims(claims, _settings())
    assert refused.value.failure == SsoFailure.EMAIL


def test_overlong_name_is_cut_and_blank_name_is_none() -> None:
    long = identity_from_claims({"email": "a@example.com", "name": "n" * 300}, _settings())
    blank = identity_from_claims({"email": "a@example.com", "name": "  "}, _settings())
    assert (len(long.name or ""), blank.name) == (255, None)


def test_every_failure_has_a_fixed_message_and_other_codes_have_none() -> None:
    assert all(failure_message(code.value) for code in SsoFailure)
    for code in ("", "DENIED", "<script>alert(1)</script>", "disabled "):
        assert failure_message(code) is None
