"""The SSRF guard's address rules: which hosts webhooks may reach (SPEC 8.2).

No DNS here: literals only, and an injected resolver where a name must resolve.
"""

import ipaddress

import pytest

from app.core import outbound
from app.core.outbound import IPAddress, RefusedAddressError

ip = ipaddress.ip_address


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),  # one decimal number
        ("0x7f000001", "127.0.0.1"),  # one hex number
        ("0x7f.1", "127.0.0.1"),  # hex, then the last part fills three bytes
        ("0X7F.0.0.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),  # octal
        ("0177.0.0.01", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),  # one trailing dot
        ("%31%32%37.0.0.1", "127.0.0.1"),  # percent-encoded
        ("0", "0.0.0.0"),
        ("169.254.43518", "169.254.169.254"),
        ("[::1]", "::1"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1"),
        ("[::FFFF:7F00:1]", "::ffff:7f00:1"),
        ("93.184.216.34", "93.184.216.34"),
    ],
)
def test_every_literal_form_is_read_as_the_address_it_denotes(host: str, address: str) -> None:
    assert outbound.parse_literal(host) == ip(address)


def test_an_ipv6_zone_id_is_kept() -> None:
    address = outbound.parse_literal("fe80::1%25eth0")  # as a URL carries it
    assert isinstance(address, ipaddress.IPv6Address)
    assert (address.scope_id, int(address)) == ("eth0", int(ip("fe80::1")))


@pytest.mark.parametrize(
    "host",
    [
        "example.com",
        "hooks.example.com",
        "256.1.1.1",
        "08.1.1.1",
        "1.2.3.4.5",
        "1..2",
        "",
        "[zz::]",
    ],
)
def test_names_and_malformed_numbers_are_not_literals(host: str) -> None:
    assert outbound.parse_literal(host) is None


@pytest.mark.parametrize(
    ("address", "category"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.5", "private"),
        ("172.16.3.4", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),  # ULA
        ("fec0::1", "private"),  # site-local
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("2001:db8::1%eth0", "link-local"),  # any zone id names a link
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("239.1.2.3", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "shared"),
        ("100.127.255.254", "shared"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("168.63.129.16", "metadata"),  # Azure's, a public address
        ("192.0.0.192", "metadata"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:10.1.2.3", "private"),
        ("::ffff:169.254.169.254", "metadata"),
        ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::", "metadata"),  # 6to4 of 169.254.169.254
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("64:ff9b::a00:5", "private"),
        ("64:ff9b:1::a00:5", "reserved"),  # local-use NAT64
        ("::7f00:1", "reserved"),  # IPv4-compatible, deprecated
        ("2001:db8::1", "private"),  # documentation
    ],
)
def test_non_public_addresses_are_refused_by_kind(address: str, category: str) -> None:
    assert outbound.classify(ip(address)) == category


@pytest.mark.parametrize(
    "address",
    ["192.0.0.8", "192.0.2.1", "198.18.0.1", "198.51.100.7", "203.0.113.9", "0.1.2.3", "2001::1"],
)
def test_other_special_purpose_blocks_are_refused(address: str) -> None:
    # protocol assignments, documentation, benchmarking, "this network", Teredo: Python
    # versions name some of them differently (private or reserved); all are refused
    assert outbound.classify(ip(address)) is not None


@pytest.mark.parametrize(
    "address",
    [
        "93.184.216.34",
        "8.8.8.8",
        "1.1.1.1",
        "2606:2800:220:1:248:1893:25c8:1946",
        "2a00:1450:4001:80b::200e",
        "::ffff:93.184.216.34",  # mapped public IPv4
        "64:ff9b::5db8:d822",  # NAT64 of 93.184.216.34
        "2002:5db8:d822::1",  # 6to4 of 93.184.216.34
    ],
)
def test_public_addresses_pass(address: str) -> None:
    assert outbound.classify(ip(address)) is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:6379/", "is a loopback address"),
        ("http://2130706433:6379/", "is a loopback address"),
        ("http://0x7f.1/", "is a loopback address"),
        ("http://[::ffff:127.0.0.1]/", "is a loopback address"),
        ("http://[::1]:5432/", "is a loopback address"),
        ("http://[fe80::1%25eth0]/", "is a link-local address"),
        ("http://169.254.169.254/latest/meta-data/", "is a cloud metadata address"),
        ("https://10.0.0.5/hook", "is a private address"),
        ("http://100.64.0.1/", "is a shared (carrier-grade NAT) address"),
        ("http://user:secret@192.168.0.1/", "is a private address"),
    ],
)
def test_a_literal_non_public_url_is_refused_without_dns(url: str, problem: str) -> None:
    assert outbound.url_problem(url, allow_private=False) == problem
    assert outbound.url_problem(url, allow_private=True) is None  # the on-premise switch


def test_public_literal_urls_pass() -> None:
    assert outbound.url_problem("http://93.184.216.34/hook", allow_private=False) is None
    public_v6 = "https://[2606:2800:220:1:248:1893:25c8:1946]:8443/x"
    assert outbound.url_problem(public_v6, allow_private=False) is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://93.184.216.34/", "must be an http:// or https:// URL"),
        ("http:///hook", "has no host"),
        ("http://93.184.216.34:99999/", "has a port out of range"),
        ("http://[zz::]/", "is not a valid URL"),
    ],
)
def test_malformed_urls_are_refused_even_when_private_is_allowed(url: str, problem: str) -> None:
    assert outbound.url_problem(url, allow_private=True) == problem


def test_shown_urls_keep_the_host_and_drop_credentials_path_and_query() -> None:
    assert outbound.host_only("https://u:token@hooks.example.com:8443/t/abc?k=1") == (
        "https://hooks.example.com:8443/..."
    )
    assert outbound.host_only("http://10.0.0.5/") == "http://10.0.0.5/"
    assert outbound.host_only("http://[::1]:81") == "http://[::1]:81/"


def answering(*addresses: str) -> outbound.Resolver:
    """A resolver giving `addresses` for any name (no DNS in unit tests)."""

    async def resolve(host: str, port: int) -> list[IPAddress]:
        del host, port
        return [ip(address) for address in addresses]

    return resolve


async def test_a_name_is_refused_when_any_of_its_addresses_is_not_public() -> None:
    mixed = answering("93.184.216.34", "10.0.0.5")
    with pytest.raises(RefusedAddressError) as refused:
        await outbound.checked_addresses("hooks.test", 443, allow_private=False, resolver=mixed)
    assert (refused.value.category, refused.value.address) == ("private", ip("10.0.0.5"))
    allowed = await outbound.checked_addresses(
        "hooks.test", 443, allow_private=True, resolver=mixed
    )
    assert allowed == [ip("93.184.216.34"), ip("10.0.0.5")]


async def test_a_public_name_gives_the_addresses_it_was_checked_with() -> None:
    public = answering("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")
    found = await outbound.checked_addresses("hooks.test", 80, allow_private=False, resolver=public)
    assert found == [ip("93.184.216.34"), ip("2606:2800:220:1:248:1893:25c8:1946")]


async def test_a_literal_is_never_looked_up() -> None:
    async def no_dns(host: str, port: int) -> list[IPAddress]:
        raise AssertionError(f"looked up {host}:{port}")

    with pytest.raises(RefusedAddressError) as refused:
        await outbound.checked_addresses("0x7f.1", 80, allow_private=False, resolver=no_dns)
    assert refused.value.category == "loopback"
    assert "0x7f.1" in str(refused.value) and "127.0.0.1" in str(refused.value)  # for the log
