"""Outbound requests (webhooks) reach public addresses only: the SSRF guard of SPEC 8.2.

A rule author chooses the URL a webhook is sent to. Without this guard that URL could be
the platform's own Redis (`http://127.0.0.1:6379/`), the database, another internal
service, or the cloud's metadata service (`169.254.169.254`), and the delivery error
would tell which ports are open. So every address a host is, or resolves to, must be
public: not loopback, private (RFC 1918, ULA), link-local, unspecified, multicast,
shared (carrier-grade NAT, 100.64/10), reserved or a cloud metadata address, whether
written plainly or in one of the odd forms resolvers accept (`2130706433`, `0x7f.1`,
`017700000001`, `%31%32%37.0.0.1`, `[::ffff:127.0.0.1]`, 6to4 and NAT64 wrappings, IPv6
zone ids). `IOTDECK_WEBHOOK_ALLOW_PRIVATE=true` turns the guard off for on-premise
receivers.

It is checked twice: when a rule is saved (`url_problem`, so the author hears of it at
once) and when each request goes out (`PinnedBackend`), because a name may point
somewhere else by then (DNS rebinding). At send time the host is resolved once, every
address is checked, and the connection is made to a checked address itself: nothing
resolves the name a second time between the check and the connect.
"""

import asyncio
import ipaddress
import logging
import re
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

import httpcore
import httpx

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> every address of the host; raises OSError when it does not resolve
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

# cloud metadata services: AWS/GCP/Azure/OpenStack (IPv4 and AWS's IPv6), AWS ECS task
# metadata, Azure's WireServer (a public address!), Alibaba, Oracle
METADATA = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",
        "fd00:ec2::254",
        "169.254.170.2",
        "168.63.129.16",
        "100.100.100.200",
        "192.0.0.192",
    )
)
SHARED = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598, carrier-grade NAT
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the last 32 bits are IPv4
# special-purpose blocks that Python's tables before 3.12.4 still call global
SPECIAL = (ipaddress.ip_network("192.0.0.0/24"), ipaddress.ip_network("64:ff9b:1::/48"))

DESCRIPTIONS = {
    "metadata": "a cloud metadata address",
    "loopback": "a loopback address",
    "private": "a private address",
    "link-local": "a link-local address",
    "unspecified": "an unspecified address",
    "multicast": "a multicast address",
    "shared": "a shared (carrier-grade NAT) address",
    "reserved": "a reserved address",
}
SCHEMES = ("http", "https")
SAVE_RESOLVE_TIMEOUT = 3.0  # seconds a rule save waits for DNS before leaving it to send time

# the numbers of an IPv4 address as inet_aton (and so getaddrinfo) reads them
_HEX = re.compile(r"0x[0-9a-f]*", re.ASCII)
_OCTAL = re.compile(r"0[0-7]*", re.ASCII)
_DECIMAL = re.compile(r"[1-9][0-9]*", re.ASCII)


class RefusedAddressError(Exception):
    """A host that is, or resolves to, an address outbound requests must not reach."""

    def __init__(self, host: str, address: IPAddress, category: str) -> None:
        super().__init__(f"{host}: {address} is {DESCRIPTIONS[category]}")
        self.host = host
        self.address = address
        self.category = category


# --- addresses ------------------------------------------------------------------------------


def _ipv4_number(part: str) -> int | None:
    if _HEX.fullmatch(part):
        return int(part[2:] or "0", 16)
    if _OCTAL.fullmatch(part):
        return int(part, 8)
    return int(part) if _DECIMAL.fullmatch(part) else None


def _ipv4_literal(text: str) -> ipaddress.IPv4Address | None:
    """1 to 4 dot-separated numbers, each decimal, octal (0…) or hex (0x…), as inet_aton reads."""
    parts = (text[:-1] if text.endswith(".") else text).split(".")  # one trailing dot is allowed
    numbers = [_ipv4_number(part) for part in parts]
    if not 1 <= len(parts) <= 4 or any(number is None for number in numbers):
        return None
    *head, last = [n for n in numbers if n is not None]
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None  # not an address; a resolver looks it up as a name (and finds nothing)
    value = last
    for index, number in enumerate(head):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def parse_literal(host: str) -> IPAddress | None:
    """The address a URL host denotes when it is an IP literal, in any form; None for a name.

    `host` as a URL carries it (brackets optional): percent-encoding is decoded, an IPv6
    zone id (`fe80::1%25eth0`) is kept as the address's `scope_id`.
    """
    text = unquote(host).strip().lower().removeprefix("[").removesuffix("]")
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            return None
    return _ipv4_literal(text)


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    # IPv4-mapped (::ffff:a.b.c.d), 6to4 (2002:AABB:CCDD::) and NAT64 (64:ff9b::a.b.c.d)
    # addresses reach the IPv4 address they carry: judge that one
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def classify(address: IPAddress) -> str | None:
    """Why outbound requests must not reach `address` (a key of DESCRIPTIONS); None if public.

    The decision rests on the standard library's flags (`is_global`, `is_private`, ...);
    the few tables here name what those flags do not: metadata services, carrier-grade NAT
    (for the name), NAT64, and blocks older Python versions still count as global.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return "link-local"  # a zone id names a link: the address is local to it
    if address in METADATA:
        return "metadata"
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return classify(embedded)
    flags = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("shared", address in SHARED),
        ("reserved", address.is_reserved),
        ("private", address.is_private or getattr(address, "is_site_local", False)),
        ("reserved", not address.is_global or any(address in block for block in SPECIAL)),
    )
    return next((category for category, flag in flags if flag), None)


def describe(category: str) -> str:
    """`loopback` -> `a loopback address`: a category as the operator reads it."""
    return DESCRIPTIONS[category]


def refuse_any(host: str, addresses: Iterable[IPAddress]) -> None:
    """Raise RefusedAddressError for the first address of `host` that is not public."""
    for address in addresses:
        category = classify(address)
        if category is not None:
            raise RefusedAddressError(host, address, category)


# --- resolving ------------------------------------------------------------------------------


def _addresses(infos: Iterable[tuple[Any, ...]]) -> list[IPAddress]:
    found: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0])  # IPv6 link-local answers carry %zone
        if address not in found:
            found.append(address)
    return found


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address of `host` from the system's resolver (getaddrinfo), A and AAAA alike."""
    loop = asyncio.get_running_loop()
    return _addresses(await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))


def _resolve_now(host: str, port: int, timeout: float) -> list[IPAddress] | None:
    """The addresses of `host`, or None when it does not resolve within `timeout` seconds.

    getaddrinfo cannot be cancelled: a lookup that hangs finishes in a daemon thread of
    its own, which neither delays the save past `timeout` nor the process's exit.
    """
    answers: list[list[tuple[Any, ...]]] = []

    def lookup() -> None:
        try:
            answers.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError):
            pass  # does not resolve: nothing to check now

    thread = threading.Thread(target=lookup, name="outbound-dns", daemon=True)
    thread.start()
    thread.join(timeout)
    return _addresses(answers[0]) if answers else None


async def checked_addresses(
    host: str, port: int, *, allow_private: bool, resolver: Resolver = system_resolver
) -> list[IPAddress]:
    """The addresses to connect to for `host`, all of them checked; RefusedAddressError else.

    A literal is its own address, whatever its form; a name is resolved once, here.
    OSError when the name does not resolve.
    """
    literal = parse_literal(host)
    addresses = [literal] if literal is not None else await resolver(unquote(host), port)
    if not addresses:
        raise OSError(f"{host} has no address")
    if not allow_private:
        refuse_any(host, addresses)
    return addresses


# --- URLs -----------------------------------------------------------------------------------


def host_only(url: str) -> str:
    """`scheme://host[:port]/...`: a URL shown without its credentials, path or query.

    Webhook URLs often carry a token in their path or query; logs and messages show this.
    """
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    rest = "" if parts.path in ("", "/") and not parts.query and not parts.fragment else "..."
    return f"{parts.scheme}://{netloc}/{rest}"


def _parse(url: str) -> tuple[httpx.URL | None, str | None]:
    try:
        parsed = httpx.URL(url)
        port = parsed.port
    except (httpx.InvalidURL, ValueError):
        return None, "is not a valid URL"
    if parsed.scheme not in SCHEMES:
        return None, "must be an http:// or https:// URL"
    if not parsed.raw_host:
        return None, "has no host"
    if port is not None and not 0 < port < 65536:
        return None, "has a port out of range"
    return parsed, None


def url_problem(
    url: str, *, allow_private: bool, resolve_timeout: float = SAVE_RESOLVE_TIMEOUT
) -> str | None:
    """Why a webhook URL may not be saved (`is a loopback address`, ...), or None.

    The save-time check. A name that does not resolve now (no record yet, DNS down, an
    air-gapped installation) is accepted: refusing it would protect nothing, since the
    send-time check decides on the addresses the name has then, and only those.
    """
    parsed, problem = _parse(url)
    if parsed is None:
        return problem
    if allow_private:
        return None
    host = parsed.raw_host.decode("ascii")
    literal = parse_literal(host)
    if literal is not None:
        category = classify(literal)
        return f"is {describe(category)}" if category else None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    addresses = _resolve_now(unquote(host), port, resolve_timeout)
    if addresses is None:
        logger.info("webhook host %s does not resolve now; it is checked again at send time", host)
        return None
    for address in addresses:
        category = classify(address)
        if category is not None:
            return f"resolves to {describe(category)}"
    return None


def request_url(url: str) -> httpx.URL:
    """The parsed URL of an outbound request; ValueError saying what is wrong with it."""
    parsed, problem = _parse(url)
    if parsed is None:
        raise ValueError(f"{host_only(url)} {problem}")
    return parsed


# --- the send side --------------------------------------------------------------------------


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to checked addresses.

    httpcore asks its backend for a TCP connection to the URL's host; this one resolves
    the host once, refuses (RefusedAddressError) when any address is not public, and
    connects to the checked address itself, trying each in turn. The name stays the URL's
    host, so the Host header, the TLS SNI and the certificate check all still use it, and
    the connection pool keeps connections per name. Redirects are never followed
    (httpcore does not), so a 3xx answer cannot lead a request to a refused address.
    """

    def __init__(
        self,
        *,
        allow_private: bool,
        resolver: Resolver = system_resolver,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.resolver = resolver
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """A connection to a checked address of `host` (RefusedAddressError, OSError)."""
        addresses = await checked_addresses(
            host, port, allow_private=self.allow_private, resolver=self.resolver
        )
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error  # the next address may answer
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        """Never: outbound requests go over TCP only."""
        del path, timeout, socket_options
        raise httpcore.UnsupportedProtocol("outbound requests do not use Unix sockets")

    async def sleep(self, seconds: float) -> None:
        """Sleep as the wrapped backend does."""
        await self.inner.sleep(seconds)


def pinned_pool(
    *, allow_private: bool, resolver: Resolver = system_resolver, max_connections: int = 50
) -> httpcore.AsyncConnectionPool:
    """An httpcore connection pool whose connections all go through a PinnedBackend.

    The certificates trusted are httpx's defaults (certifi, or SSL_CERT_FILE/SSL_CERT_DIR).
    No proxy: a proxy would resolve the name itself, out of the guard's sight.
    """
    context: ssl.SSLContext = httpx.create_ssl_context()
    backend = PinnedBackend(allow_private=allow_private, resolver=resolver)
    return httpcore.AsyncConnectionPool(
        ssl_context=context,
        network_backend=backend,
        max_connections=max_connections,
        keepalive_expiry=5.0,
    )
