"""A small OpenID Connect provider for tests, built from authlib's own server classes.

authlib's AuthorizationServer with its authorization-code grant, the PKCE extension and the
OpenID Connect code extension, served by the standard library's threading HTTP server:
discovery, JWKS (an RSA key made here), /authorize (a page whose button the browser clicks),
/token, /userinfo. Knobs let a test sign in as anyone, or make the provider misbehave.
"""

import html
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from authlib.common.security import generate_token
from authlib.oauth2 import AuthorizationServer, OAuth2Error, ResourceProtector
from authlib.oauth2.rfc6749 import (
    ClientMixin,
    JsonRequest,
    OAuth2Request,
    TokenMixin,
    grants,
)
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenGenerator, BearerTokenValidator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from authlib.oidc.core.models import AuthorizationCodeMixin
from joserfc.jwk import RSAKey

from bench.services import free_port

CLIENT_ID = "iotdeck-tests"
CLIENT_SECRET = "provider-test-secret-" + "x" * 20
KEY_ID = "test-signing-key"


@dataclass
class Person:
    """Who the provider signs in; `roles` goes into the `roles` claim."""

    email: str
    name: str = "Sam Single-Sign-On"
    roles: list[str] = field(default_factory=list)
    email_verified: bool = True
    roles_in_id_token: bool = True  # false: only the userinfo endpoint tells them

    @property
    def sub(self) -> str:
        """A stable subject identifier, as a provider keeps one per person."""
        return "sub-" + self.email


@dataclass
class Client(ClientMixin):
    """The one registered client: iotdeck, confidential, code flow only."""

    redirect_uris: list[str]
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET

    def get_client_id(self) -> str:
        """This client's id."""
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        """The first registered redirect URI."""
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str | None) -> str:
        """Every requested scope is allowed."""
        return scope or "openid"

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        """Exact match against the registered URIs, as real providers do."""
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        """The registered secret."""
        return client_secret == self.client_secret

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        """HTTP Basic or form-posted secret at the token endpoint."""
        return method in {"client_secret_basic", "client_secret_post"}

    def check_response_type(self, response_type: str) -> bool:
        """Code flow only."""
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        """Code flow only (no refresh tokens)."""
        return grant_type == "authorization_code"


@dataclass
class Code(AuthorizationCodeMixin):
    """An issued authorization code and what it was issued for."""

    code: str
    client_id: str
    redirect_uri: str
    scope: str
    person: Person
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self) -> str:
        """The redirect URI of the authorization request."""
        return self.redirect_uri

    def get_scope(self) -> str:
        """The granted scope."""
        return self.scope

    def get_nonce(self) -> str | None:
        """The client's nonce, copied into the ID token."""
        return self.nonce

    def get_auth_time(self) -> int:
        """When the person approved."""
        return self.auth_time


@dataclass
class Token(TokenMixin):
    """An issued access token, for the userinfo endpoint."""

    client: Client
    person: Person
    scope: str
    access_token: str
    issued_at: float = field(default_factory=time.time)
    expires_in: int = 3600

    def check_client(self, client: ClientMixin) -> bool:
        """Issued to this client."""
        return client.get_client_id() == self.client.client_id

    def get_scope(self) -> str:
        """The granted scope."""
        return self.scope

    def get_expires_in(self) -> int:
        """Lifetime in seconds."""
        return self.expires_in

    def is_expired(self) -> bool:
        """Past its lifetime."""
        return time.time() > self.issued_at + self.expires_in

    def is_revoked(self) -> bool:
        """Tokens here are never revoked."""
        return False

    def get_user(self) -> Person:
        """Whom it speaks for."""
        return self.person

    def get_client(self) -> Client:
        """Whom it was issued to."""
        return self.client


@dataclass(frozen=True)
class HttpRequest:
    """What the HTTP handler read: enough for authlib's request objects."""

    method: str
    url: str
    headers: Any  # email.message.Message: case-insensitive get()
    args: dict[str, str]
    form: dict[str, str]


class ProviderRequest(OAuth2Request):
    """authlib's OAuth2Request over an HttpRequest (query for /authorize, form for /token)."""

    def __init__(self, request: HttpRequest) -> None:
        """Parameters from the form on POST /token, from the query everywhere else."""
        super().__init__(request.method, request.url, headers=request.headers)
        self._http = request
        token_request = request.method == "POST" and urlsplit(request.url).path == "/token"
        self.payload = BasicOAuth2Payload(request.form if token_request else request.args)

    @property
    def args(self) -> dict[str, str]:
        """The query parameters."""
        return self._http.args

    @property
    def form(self) -> dict[str, str]:
        """The form-encoded body."""
        return self._http.form


@dataclass
class Response:
    """Status, body and headers, as AuthorizationServer.handle_response hands them over."""

    status: int
    body: bytes
    headers: list[tuple[str, str]]


class Server(AuthorizationServer):
    """authlib's AuthorizationServer bound to this provider's in-memory state."""

    def __init__(self, provider: "Provider") -> None:
        """Register the code grant with PKCE and OpenID Connect, and a bearer token maker."""
        super().__init__(scopes_supported=["openid", "email", "profile"])
        self.provider = provider
        self.register_token_generator("default", BearerTokenGenerator(_token_string))
        self.register_grant(CodeGrant, [CodeChallenge(required=True), ProviderOpenIDCode(self)])

    def query_client(self, client_id: str) -> Client | None:
        """The one client, when asked for by its id."""
        client = self.provider.client
        return client if client_id == client.client_id else None

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        """Keep the access token for /userinfo."""
        self.provider.tokens[token["access_token"]] = Token(
            client=request.client,
            person=request.user,
            scope=token.get("scope", ""),
            access_token=token["access_token"],
        )

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        """Wrap the handler's request."""
        return request if isinstance(request, OAuth2Request) else ProviderRequest(request)

    def create_json_request(self, request: Any) -> JsonRequest:
        """Unused: no JSON endpoints here."""
        raise NotImplementedError

    def handle_response(self, status: int, body: Any, headers: Any) -> Response:
        """A Response the HTTP handler writes out."""
        data = json.dumps(body).encode() if isinstance(body, dict) else str(body or "").encode()
        return Response(status, data, list(headers or []))

    def send_signal(self, name: str, *args: object, **kwargs: object) -> None:
        """No signals here."""


def _token_string(**_: object) -> str:
    return generate_token(42)


class CodeGrant(grants.AuthorizationCodeGrant):
    """Codes kept in the provider's memory, used once."""

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        """Remember the code with its nonce, PKCE challenge and person."""
        data = request.payload.data
        provider: Provider = self.server.provider
        provider.codes[code] = Code(
            code=code,
            client_id=request.client.client_id,
            redirect_uri=data.get("redirect_uri", ""),
            scope=request.scope,
            person=request.user,
            nonce=data.get("nonce"),
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
        )
        provider.authorizations.append(dict(data))

    def query_authorization_code(self, code: str, client: ClientMixin) -> Code | None:
        """The code, when issued to this client."""
        found = self.server.provider.codes.get(code)
        return found if found is not None and found.client_id == client.get_client_id() else None

    def delete_authorization_code(self, authorization_code: Code) -> None:
        """Codes are single-use."""
        self.server.provider.codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code: Code) -> Person:
        """The person who approved."""
        return authorization_code.person


class ProviderOpenIDCode(OpenIDCode):
    """ID tokens signed with the provider's RSA key; nonce required."""

    def __init__(self, server: Server) -> None:
        """Keep the server for its provider's key, issuer and knobs."""
        super().__init__(require_nonce=True)
        self.server = server

    def resolve_client_private_key(self, client: ClientMixin) -> RSAKey:
        """The provider's signing key."""
        return self.server.provider.key

    def get_client_algorithm(self, client: ClientMixin) -> str:
        """RS256, as the discovery document says."""
        return "RS256"

    def get_encode_header(self, client: ClientMixin) -> dict[str, str]:
        """Name the key, so clients pick it from the JWKS."""
        return {"alg": "RS256", "kid": KEY_ID}

    def get_client_claims(self, client: ClientMixin) -> dict[str, Any]:
        """Issuer and audience (another client's id when a test asks for a wrong one)."""
        provider = self.server.provider
        if provider.audience is None:
            return {"iss": provider.issuer, "aud": [client.get_client_id()]}
        # `azp` names iotdeck: authlib's default checks (azp only) would let this through
        return {"iss": provider.issuer, "aud": [provider.audience], "azp": client.get_client_id()}

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        """A nonce seen before is a replay."""
        return any(code.nonce == nonce for code in self.server.provider.codes.values())

    def generate_user_info(self, user: Person, scope: str) -> UserInfo:
        """The ID token's claims about the person."""
        return self.server.provider.claims(user, id_token=True)


class Provider:
    """The provider's state: its key, client, codes, tokens, and who signs in next."""

    def __init__(self, port: int) -> None:
        """An RSA key made now; the client's redirect URIs are set once iotdeck has a port."""
        self.issuer = f"http://127.0.0.1:{port}"
        self.key = RSAKey.generate_key(2048, parameters={"kid": KEY_ID, "use": "sig"})
        self.client = Client(redirect_uris=[])
        self.person = Person(email="nobody@example.com")
        self.audience: str | None = None  # set: ID tokens name this audience instead
        self.announced_issuer: str | None = None  # set: discovery names this issuer instead
        self.codes: dict[str, Code] = {}
        self.tokens: dict[str, Token] = {}
        self.authorizations: list[dict[str, str]] = []  # each approved request's parameters
        self.server = Server(self)
        self.protector = ResourceProtector()
        self.protector.register_token_validator(_BearerValidator(self))

    def claims(self, person: Person, *, id_token: bool) -> UserInfo:
        """What the provider tells about `person`, in the ID token or at /userinfo."""
        claims = UserInfo(
            sub=person.sub,
            email=person.email,
            email_verified=person.email_verified,
            name=person.name,
        )
        if person.roles and (person.roles_in_id_token or not id_token):
            claims["roles"] = list(person.roles)
        return claims

    def discovery(self) -> dict[str, Any]:
        """The OpenID Connect Discovery document."""
        return {
            "issuer": self.announced_issuer or self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
        }

    def jwks(self) -> dict[str, Any]:
        """The public half of the signing key."""
        return {"keys": [self.key.as_dict(private=False)]}


class _BearerValidator(BearerTokenValidator):
    def __init__(self, provider: Provider) -> None:
        super().__init__()
        self.provider = provider

    def authenticate_token(self, token_string: str) -> Token | None:
        return self.provider.tokens.get(token_string)


def _consent_page(provider: Provider) -> bytes:
    person = html.escape(provider.person.email)
    return f"""<!doctype html><html><head><title>Test identity provider</title></head>
<body style="font-family: sans-serif; max-width: 28rem; margin: 4rem auto">
<h1>Test identity provider</h1><p>iotdeck asks to sign you in as <b>{person}</b>.</p>
<form method="post"><button name="decision" value="approve">Continue as {person}</button>
<button name="decision" value="deny">Cancel</button></form></body></html>""".encode()


class _Handler(BaseHTTPRequestHandler):
    provider: Provider  # set on the subclass made for each provider

    def do_GET(self) -> None:
        request = self._request()
        path = urlsplit(request.url).path
        provider = self.provider
        if path == "/.well-known/openid-configuration":
            self._json(provider.discovery())
        elif path == "/jwks":
            self._json(provider.jwks())
        elif path == "/authorize":
            self._write(self._authorize(request, decided=False))
        elif path == "/userinfo":
            self._write(self._userinfo(request))
        else:
            self._write(Response(404, b"not found", []))

    def do_POST(self) -> None:
        request = self._request()
        path = urlsplit(request.url).path
        server = self.provider.server
        if path == "/authorize":
            self._write(self._authorize(request, decided=True))
        elif path == "/token":
            self._write(server.create_token_response(request))
        else:
            self._write(Response(404, b"not found", []))

    def _authorize(self, request: HttpRequest, *, decided: bool) -> Response:
        server, person = self.provider.server, self.provider.person
        try:
            grant = server.get_consent_grant(request, end_user=person)
        except OAuth2Error as error:
            return server.handle_error_response(server.create_oauth2_request(request), error)
        if not decided:
            return Response(200, _consent_page(self.provider), [("Content-Type", "text/html")])
        approved = person if request.form.get("decision") == "approve" else None
        return server.create_authorization_response(grant.request, grant_user=approved, grant=grant)

    def _userinfo(self, request: HttpRequest) -> Response:
        try:
            token = self.provider.protector.validate_request(["openid"], ProviderRequest(request))
        except OAuth2Error as error:
            return Response(401, json.dumps({"error": error.error}).encode(), [])
        body = json.dumps(self.provider.claims(token.person, id_token=False)).encode()
        return Response(200, body, [("Content-Type", "application/json")])

    def _request(self) -> HttpRequest:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        return HttpRequest(
            method=self.command,
            url=f"{self.provider.issuer}{self.path}",
            headers=self.headers,
            args=dict(parse_qsl(split.query)),
            form=dict(parse_qsl(body)),
        )

    def _json(self, data: dict[str, Any]) -> None:
        self._write(
            Response(200, json.dumps(data).encode(), [("Content-Type", "application/json")])
        )

    def _write(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: object) -> None:
        del format, args  # quiet: pytest shows failures, not every request


@contextmanager
def running_provider() -> Iterator[Provider]:
    """The provider on a free loopback port, serving until the block ends."""
    port = free_port()
    provider = Provider(port)
    handler = type("Handler", (_Handler,), {"provider": provider})
    httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=httpd.serve_forever, name="oidc-provider", daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
