"""SSRF guard (spec 01 §5, spec 06 §3.3, hardened): a table of hostile URLs, the acceptable ones,
and a property over every numeric spelling of non-public IPv4 addresses."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditflow_dagster.core.ssrf import (
    INVALID_FORMAT,
    UnsafeUrl,
    address_refusal,
    check_url,
    parse_ipv4_host,
)

#: A fake DNS: names → addresses (what an attacker's zone would answer).
FAKE_DNS = {
    "public.example": ["93.184.216.34"],
    "public6.example": ["2606:2800:220:1:248:1893:25c8:1946"],
    "rebind.example": ["127.0.0.1"],
    "internal.example": ["10.0.0.7"],
    "metadata.example": ["169.254.169.254"],
    "cgnat.example": ["100.64.1.1"],
    "mixed.example": ["93.184.216.34", "192.168.1.10"],  # one bad answer is enough
    "v6loop.example": ["::1"],
    "v6ula.example": ["fd12:3456:789a::1"],
    "mapped.example": ["::ffff:10.1.2.3"],
    "nat64.example": ["64:ff9b::7f00:1"],
    "zero.example": ["0.0.0.0"],
    "linklocal6.example": ["fe80::1%eth0"],
}


def fake_resolve(host: str, port: int) -> list[str]:
    return list(FAKE_DNS.get(host, []))


def refused(url: str, *, production: bool = True, allowed: list[str] | None = None, resolve=fake_resolve) -> str:
    with pytest.raises(UnsafeUrl) as info:
        check_url(url, allowed_origins=allowed or [], production=production, resolve=resolve)
    return str(info.value)


# (url, fragment of the expected message) — refused in production, with the fake resolver.
HOSTILE: list[tuple[str, str]] = [
    # malformed / parser-confusion
    ("not a url", INVALID_FORMAT),
    ("//example.com/hook", INVALID_FORMAT),
    ("http:example.com/hook", INVALID_FORMAT),
    ("http:/example.com/hook", INVALID_FORMAT),
    ("http://", INVALID_FORMAT),
    ("http://exa mple.com/", INVALID_FORMAT),
    ("http://example.com\\@127.0.0.1/", INVALID_FORMAT),
    ("http://exam\tple.com/", INVALID_FORMAT),
    ("http://1.2.3.256/", INVALID_FORMAT),
    ("http://0x100000000/", INVALID_FORMAT),
    ("http://1.2.3.4.5/", INVALID_FORMAT),
    ("http://[::1/", INVALID_FORMAT),
    ("http://[fe80::1%25eth0]/", INVALID_FORMAT),
    ("http://example.com:99999/", INVALID_FORMAT),
    ("http://a..b/", INVALID_FORMAT),
    # scheme
    ("ftp://example.com/file", "scheme"),
    ("file:///etc/passwd", "scheme"),
    ("gopher://127.0.0.1:6379/_INFO", "scheme"),
    ("javascript:alert(1)", "scheme"),
    # userinfo tricks
    ("http://good.com@127.0.0.1/", "credentials"),
    ("http://user:pass@example.com/", "credentials"),
    ("https://example.com:443@evil.example/", "credentials"),
    ("http://@example.com/", "credentials"),
    # loopback, every spelling
    ("http://127.0.0.1/", "loopback"),
    ("http://127.0.0.1:8080/", "loopback"),
    ("http://127.5.6.7/", "loopback"),
    ("http://2130706433/", "loopback"),
    ("http://0x7f.1/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://017700000001/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://127.0.1/", "loopback"),
    ("http://127.0.0.1./", "loopback"),
    ("http://%31%32%37.0.0.1/", "loopback"),
    ("http://１２７．０．０．１/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://[0:0:0:0:0:0:0:1]/", "loopback"),
    ("http://localhost/", "local name"),
    ("http://LOCALHOST:3000/", "local name"),
    ("http://localhost./", "local name"),
    ("http://api.localhost/", "local name"),
    ("http://printer.local/", "local name"),
    # private, link-local, metadata, special ranges
    ("http://10.0.0.1/", "private"),
    ("http://10.255.255.255/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://172.31.255.254/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://0xc0a80101/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://0xa9fea9fe/", "link-local"),
    ("http://100.64.0.1/", "carrier-grade NAT"),
    ("http://100.127.255.254/", "carrier-grade NAT"),
    ("http://192.0.0.8/", "IETF protocol"),
    ("http://198.18.0.1/", "benchmarking"),
    ("http://198.19.255.1/", "benchmarking"),
    ("http://192.0.2.10/", "documentation"),
    ("http://224.0.0.1/", "multicast"),
    ("http://239.255.255.250/", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://0/", "unspecified"),
    ("http://0.1.2.3/", "unspecified"),
    # IPv6 literals (brackets must not hide them)
    ("http://[::]/", "unspecified"),
    ("http://[fc00::1]/", "unique-local"),
    ("http://[fd00:ec2::254]/", "unique-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[febf::1]/", "link-local"),
    ("http://[fec0::1]/", "site-local"),
    ("http://[ff02::1]/", "multicast"),
    ("http://[::ffff:127.0.0.1]/", "IPv4-mapped loopback"),
    ("http://[::ffff:7f00:1]/", "IPv4-mapped loopback"),
    ("http://[::ffff:169.254.169.254]/", "IPv4-mapped link-local"),
    ("http://[::ffff:10.0.0.1]/", "IPv4-mapped private"),
    ("http://[::127.0.0.1]/", "IPv4-compatible"),
    ("http://[64:ff9b::7f00:1]/", "NAT64 form of loopback"),
    ("http://[64:ff9b::a9fe:a9fe]/", "NAT64 form of link-local"),
    ("http://[2002:a00:1::]/", "6to4 form of private"),
    ("http://[2001:db8::1]/", "documentation"),
    # DNS names whose answers are not public
    ("http://rebind.example/hook", "resolves to 127.0.0.1"),
    ("http://internal.example/hook", "resolves to 10.0.0.7"),
    ("http://metadata.example/latest", "resolves to 169.254.169.254"),
    ("http://cgnat.example/", "carrier-grade NAT"),
    ("https://mixed.example/", "resolves to 192.168.1.10"),
    ("http://v6loop.example/", "resolves to ::1"),
    ("http://v6ula.example/", "unique-local"),
    ("http://mapped.example/", "IPv4-mapped private"),
    ("http://nat64.example/", "NAT64 form of loopback"),
    ("http://zero.example/", "unspecified"),
    ("http://linklocal6.example/", "link-local"),
    ("http://nxdomain.example/", "did not resolve"),
    # odd ports on public hosts
    ("http://public.example:8080/", "port 8080"),
    ("https://public.example:8443/", "port 8443"),
    ("http://public.example:22/", "port 22"),
    ("http://93.184.216.34:6379/", "port 6379"),
    ("http://public.example:0/", "port 0"),
]


def test_table_is_big_enough():
    assert len(HOSTILE) >= 40


@pytest.mark.parametrize(("url", "why"), HOSTILE)
def test_hostile_urls_are_refused_in_production(url, why):
    assert why.lower() in refused(url).lower()


@pytest.mark.parametrize(
    ("url", "why"),
    [(u, w) for u, w in HOSTILE if "local name" not in w and u not in ("http://127.0.0.1/", "http://127.0.0.1./",
     "http://2130706433/", "http://0x7f.1/", "http://0x7f000001/", "http://017700000001/", "http://0177.0.0.1/",
     "http://127.1/", "http://127.0.1/", "http://%31%32%37.0.0.1/", "http://１２７．０．０．１/", "http://[::1]/",
     "http://[0:0:0:0:0:0:0:1]/", "http://127.0.0.1:8080/")],
)
def test_hostile_urls_are_refused_in_development_too(url, why):
    """Development relaxes only localhost names and the two loopback addresses."""
    refused(url, production=False)


def test_messages_never_echo_path_query_or_credentials():
    for url in ("http://user:hunter2@example.com/", "http://10.0.0.1/x?token=abc", "http://127.0.0.1/p?secret=zz"):
        message = refused(url)
        for leak in ("hunter2", "token=abc", "secret=zz", "/x", "/p"):
            assert leak not in message


ACCEPTABLE = [
    ("https://public.example/hooks/progress", "https://public.example/hooks/progress", "93.184.216.34"),
    ("http://public.example/", "http://public.example/", "93.184.216.34"),
    ("HTTPS://Public.Example:443/a?b=1#frag", "https://public.example/a?b=1", "93.184.216.34"),
    ("http://public.example:80", "http://public.example/", "93.184.216.34"),
    ("https://public6.example/", "https://public6.example/", "2606:2800:220:1:248:1893:25c8:1946"),
    ("http://93.184.216.34/hook", "http://93.184.216.34/hook", "93.184.216.34"),
    ("http://1572395042/hook", "http://93.184.216.34/hook", "93.184.216.34"),
    ("https://[2606:4700:4700::1111]/x", "https://[2606:4700:4700::1111]/x", "2606:4700:4700::1111"),
    ("http://[::ffff:8.8.8.8]/", "http://[::ffff:808:808]/", "::ffff:808:808"),
]


@pytest.mark.parametrize(("url", "canonical", "pinned"), ACCEPTABLE)
def test_acceptable_urls(url, canonical, pinned):
    for production in (True, False):
        target = check_url(url, allowed_origins=[], production=production, resolve=fake_resolve)
        assert target.url == canonical
        assert target.pinned_address == pinned
        assert not target.allowlisted


def test_write_time_check_without_resolver_does_not_pin_names():
    target = check_url("https://anything.example/hook", allowed_origins=[], production=True)
    assert target.pinned_address is None and target.addresses == ()
    assert target.host == "anything.example" and target.port == 443


def test_every_resolved_address_is_pinned_candidate_and_first_is_pinned():
    t = check_url("http://public.example/", allowed_origins=[], production=True,
                  resolve=lambda h, p: ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"])
    assert t.addresses == ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")
    assert t.pinned_address == "93.184.216.34"


def test_resolver_errors_propagate_for_retry():
    def boom(host, port):
        raise OSError("temporary DNS failure")

    with pytest.raises(OSError):
        check_url("http://public.example/", allowed_origins=[], production=True, resolve=boom)


def test_dev_allows_local_names_and_loopback_literals_on_any_port():
    for url, pinned in [
        ("http://localhost:5173/hook", "127.0.0.1"),
        ("http://app.localhost:8000/", "127.0.0.1"),
        ("http://printer.local:631/", "127.0.0.1"),
        ("http://127.0.0.1:9999/hook", "127.0.0.1"),
        ("http://2130706433:9999/hook", "127.0.0.1"),
        ("http://[::1]:9999/hook", "::1"),
    ]:
        t = check_url(url, allowed_origins=[], production=False, resolve=lambda h, p: ["127.0.0.1"])
        assert t.dev_local and t.pinned_address == pinned
    # other loopback addresses stay refused in development
    assert "loopback" in refused("http://127.0.0.2:9999/", production=False)


def test_allowlist_is_exact_and_skips_later_checks():
    allowed = ["https://hooks.partner.example", "http://127.0.0.1:8080", "http://internal.example:9000"]
    # allowlisted: any port/address, even in production; resolution still pins
    t = check_url("http://internal.example:9000/x", allowed_origins=allowed, production=True, resolve=fake_resolve)
    assert t.allowlisted and t.pinned_address == "10.0.0.7"
    t = check_url("http://127.0.0.1:8080/x", allowed_origins=allowed, production=True, resolve=fake_resolve)
    assert t.allowlisted and t.pinned_address == "127.0.0.1"
    t = check_url("HTTPS://HOOKS.partner.example:443/h", allowed_origins=allowed, production=True)
    assert t.allowlisted and t.origin == "https://hooks.partner.example"
    # anything else is refused once an allowlist exists (even a public host)
    for url in ("https://public.example/", "http://hooks.partner.example/", "https://hooks.partner.example:8443/",
                "http://127.0.0.1:8081/", "https://evil.example/?https://hooks.partner.example"):
        assert "not in WEBHOOK_ALLOWED_ORIGINS" in refused(url, allowed=allowed)
    # entries with a path, a trailing slash, uppercase or an explicit default port never match
    for entry in ("https://hooks.partner.example/", "https://hooks.partner.example/x",
                  "https://HOOKS.partner.example", "https://hooks.partner.example:443"):
        assert "not in WEBHOOK_ALLOWED_ORIGINS" in refused("https://hooks.partner.example/h", allowed=[entry])
    # userinfo is refused before the allowlist is consulted
    assert "credentials" in refused("https://x@hooks.partner.example/", allowed=allowed)


def test_whatwg_ipv4_forms():
    assert str(parse_ipv4_host("2130706433")) == "127.0.0.1"
    assert str(parse_ipv4_host("0x7f.1")) == "127.0.0.1"
    assert str(parse_ipv4_host("017700000001")) == "127.0.0.1"
    assert str(parse_ipv4_host("127.1")) == "127.0.0.1"
    assert str(parse_ipv4_host("192.168.257")) == "192.168.1.1"
    assert str(parse_ipv4_host("0x")) == "0.0.0.0"
    assert parse_ipv4_host("example.com") is None
    assert parse_ipv4_host("1.2.3.example") is None
    with pytest.raises(UnsafeUrl):
        parse_ipv4_host("09.0.0.1")  # 9 is not an octal digit


NON_PUBLIC_V4 = [
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
]


@st.composite
def non_public_ipv4(draw) -> ipaddress.IPv4Address:
    net = ipaddress.IPv4Network(draw(st.sampled_from(NON_PUBLIC_V4)))
    offset = draw(st.integers(min_value=0, max_value=net.num_addresses - 1))
    return net.network_address + offset


def _fmt(n: int, style: str) -> str:
    return {"dec": str(n), "hex": hex(n), "HEX": "0X" + format(n, "X"), "oct": "0" + format(n, "o") if n else "0"}[style]


@st.composite
def numeric_spelling(draw, ip: ipaddress.IPv4Address) -> str:
    """One of the WHATWG spellings of ``ip``: 1 to 4 parts, each decimal/hex/octal."""
    b = ip.packed
    nparts = draw(st.integers(min_value=1, max_value=4))
    values = list(b[: nparts - 1]) + [int.from_bytes(b[nparts - 1:], "big")]
    parts = [_fmt(v, draw(st.sampled_from(["dec", "hex", "HEX", "oct"]))) for v in values]
    host = ".".join(parts)
    if draw(st.booleans()):
        host += "."  # a trailing dot is allowed by the IPv4 parser
    return host


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_property_non_public_ipv4_refused_in_any_numeric_form(data):
    ip = data.draw(non_public_ipv4())
    host = data.draw(numeric_spelling(ip))
    assert parse_ipv4_host(host) == ip
    port = data.draw(st.sampled_from(["", ":80", ":443", ":8080"]))
    scheme = data.draw(st.sampled_from(["http", "https", "HTTP"]))
    url = f"{scheme}://{host}{port}/hook"
    with pytest.raises(UnsafeUrl):
        check_url(url, allowed_origins=[], production=True, resolve=fake_resolve)
    # development relaxes only the exact loopback address 127.0.0.1
    if ip != ipaddress.IPv4Address("127.0.0.1"):
        with pytest.raises(UnsafeUrl):
            check_url(url, allowed_origins=[], production=False, resolve=fake_resolve)
    # and the IPv4-mapped / NAT64 IPv6 forms of the same address are refused too
    assert address_refusal(f"::ffff:{ip}") is not None
    assert address_refusal(f"64:ff9b::{ip}") is not None


@settings(max_examples=200, deadline=None)
@given(ip=non_public_ipv4())
def test_property_dns_answers_in_non_public_ranges_are_refused(ip):
    with pytest.raises(UnsafeUrl, match="resolves to"):
        check_url("https://some-name.example/hook", allowed_origins=[], production=False,
                  resolve=lambda h, p: ["93.184.216.34", str(ip)])
