"""SSRF guard for user-supplied webhook URLs (spec 01 §5, spec 06 §3.3, hardened).

Pure: stdlib only. The same function runs when a URL is written (the API answers 400) and again at
send time with a ``resolve`` callable, in which case every resolved address must pass and the
returned :class:`SafeTarget` carries the address to connect to (anti-rebinding: the sender connects
to *that* address, never resolves again).

Rules, in order:

1. Parse the URL strictly. Host parsing follows the WHATWG URL standard for special schemes
   (percent-decoding, IDNA mapping, the IPv4 number forms ``2130706433``, ``0x7f.1``,
   ``017700000001``, ``127.1``); anything that parsers disagree on (backslashes, whitespace,
   control characters, ``http:host`` without ``//``) is refused as malformed instead of guessed.
2. Scheme ``http`` / ``https`` only.
3. No userinfo (``http://good.com@127.0.0.1/``).
4. ``WEBHOOK_ALLOWED_ORIGINS`` set: the origin (``scheme://host[:port]``, lowercase, default port
   omitted) must equal an entry exactly; a match skips every later check (any port, any address),
   no match is refused.
5. Otherwise: ``localhost``, ``*.localhost``, ``*.local`` and the loopback literals ``127.0.0.1`` /
   ``::1`` are accepted only outside production (any port); IP literals (and, with ``resolve``,
   every resolved address) must be public: loopback, private, link-local (cloud metadata
   ``169.254.169.254``), CGNAT, ``192.0.0.0/24``, benchmarking, documentation, multicast, reserved,
   broadcast, unspecified, unique-local, site-local, and the IPv4-mapped / IPv4-compatible / NAT64 /
   6to4 forms of all of those are refused; ports other than 80/443 are refused.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote, unquote_to_bytes

__all__ = ["SafeTarget", "UnsafeUrl", "check_url", "parse_ipv4_host", "address_refusal"]

Resolver = Callable[[str, int], list[str]]

DEFAULT_PORTS = {"http": 80, "https": 443}
ALLOWED_PORTS = frozenset({80, 443})
INVALID_FORMAT = "Invalid webhookUrl format"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeUrl(ValueError):
    """The URL is malformed or points somewhere a webhook must not go. ``str(exc)`` is the
    user-facing message (it never contains the URL's path, query or credentials)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class SafeTarget:
    """A checked URL. ``url`` is the canonical form to request (fragment dropped, host normalized);
    ``pinned_address`` is the IP to connect to (the literal itself, or the first resolved address;
    ``None`` when a host name was checked without ``resolve``)."""

    url: str
    scheme: str
    host: str  # ASCII, lowercase, no brackets, no trailing dot
    port: int
    origin: str
    path: str  # path + optional "?query", never empty
    is_ip_literal: bool
    allowlisted: bool = False
    dev_local: bool = False  # accepted only because this is not production (localhost & co)
    addresses: tuple[str, ...] = field(default_factory=tuple)
    pinned_address: str | None = None

    @property
    def host_header(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return h if self.port == DEFAULT_PORTS[self.scheme] else f"{h}:{self.port}"


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
# WHATWG "forbidden domain code points" (plus '%' after decoding and anything non-printable).
_FORBIDDEN_HOST_CHARS = set(" #%/:<>?@[\\]^|\"'`{}") | {chr(c) for c in range(0x20)} | {"\x7f"}
_LABEL_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_\-]*[a-z0-9_])?$")


def _parse_ipv4_number(part: str) -> int | None:
    if part == "":
        return None
    if part[:2] in ("0x", "0X"):
        digits, base = part[2:], 16
        if digits == "":
            return 0
    elif len(part) > 1 and part[0] == "0":
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    allowed = {16: "0123456789abcdefABCDEF", 8: "01234567", 10: "0123456789"}[base]
    if not digits or any(c not in allowed for c in digits):
        return None
    return int(digits, base)


def _ends_in_number(host: str) -> bool:
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    last = parts[-1]
    if last and all(c in "0123456789" for c in last):
        return True
    return last[:2] in ("0x", "0X") and _parse_ipv4_number(last) is not None


def parse_ipv4_host(host: str) -> ipaddress.IPv4Address | None:
    """WHATWG IPv4 host parser: ``None`` when ``host`` is not meant as an IPv4 address, the address
    when it is, :class:`UnsafeUrl` when it looks numeric but is invalid (``1.2.3.256``)."""
    if not host or not _ends_in_number(host):
        return None
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    if len(parts) > 4:
        raise UnsafeUrl(INVALID_FORMAT)
    numbers = []
    for p in parts:
        n = _parse_ipv4_number(p)
        if n is None:
            raise UnsafeUrl(INVALID_FORMAT)
        numbers.append(n)
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        raise UnsafeUrl(INVALID_FORMAT)
    value = numbers[-1]
    for i, n in enumerate(numbers[:-1]):
        value += n * 256 ** (3 - i)
    return ipaddress.IPv4Address(value)


def _parse_host(raw: str) -> tuple[str, IPAddress | None]:
    """(normalized host, IP if literal) for the authority's host part."""
    if raw.startswith("["):
        if not raw.endswith("]"):
            raise UnsafeUrl(INVALID_FORMAT)
        inner = raw[1:-1]
        if "%" in inner:  # zone identifiers are not valid in URLs
            raise UnsafeUrl(INVALID_FORMAT)
        try:
            ip6 = ipaddress.IPv6Address(inner)
        except ValueError:
            raise UnsafeUrl(INVALID_FORMAT) from None
        return ip6.compressed, ip6
    try:
        decoded = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafeUrl(INVALID_FORMAT) from None
    if not decoded:
        raise UnsafeUrl(INVALID_FORMAT)
    try:
        # IDNA (nameprep maps full-width digits and ideographic dots, lowercases).
        ascii_host = decoded.encode("idna").decode("ascii") if not decoded.isascii() else decoded
    except UnicodeError:
        raise UnsafeUrl(INVALID_FORMAT) from None
    ascii_host = ascii_host.lower()
    if not ascii_host or any(c in _FORBIDDEN_HOST_CHARS for c in ascii_host):
        raise UnsafeUrl(INVALID_FORMAT)
    ip4 = parse_ipv4_host(ascii_host)
    if ip4 is not None:
        return str(ip4), ip4
    name = ascii_host[:-1] if ascii_host.endswith(".") else ascii_host
    if not name or len(name) > 253 or not all(_LABEL_RE.match(label) and len(label) <= 63 for label in name.split(".")):
        raise UnsafeUrl(INVALID_FORMAT)
    return name, None


@dataclass(frozen=True)
class _Parsed:
    scheme: str
    userinfo: bool
    host: str
    ip: IPAddress | None
    port: int
    explicit_port: bool
    path: str


def _parse(url: str) -> _Parsed:
    if not isinstance(url, str):
        raise UnsafeUrl(INVALID_FORMAT)
    s = url.strip(" \t\r\n\f\v\x00")
    # Where URL parsers disagree (WHATWG strips tabs/newlines and treats '\' as '/'), refuse.
    if not s or any(ord(c) < 0x21 or ord(c) == 0x7F or c == "\\" for c in s):
        raise UnsafeUrl(INVALID_FORMAT)
    m = _SCHEME_RE.match(s)
    if not m:
        raise UnsafeUrl(INVALID_FORMAT)
    scheme = m.group(1).lower()
    rest = s[m.end():]
    if scheme not in DEFAULT_PORTS:
        raise UnsafeUrl(f"Webhook URL scheme must be http or https (got {scheme!r})")
    if not rest.startswith("//"):
        raise UnsafeUrl(INVALID_FORMAT)
    rest = rest[2:]
    end = len(rest)
    for sep in "/?#":
        i = rest.find(sep)
        if i != -1:
            end = min(end, i)
    authority, tail = rest[:end], rest[end:]
    userinfo = "@" in authority
    hostport = authority.rsplit("@", 1)[-1]
    if hostport.startswith("["):
        close = hostport.find("]")
        if close == -1:
            raise UnsafeUrl(INVALID_FORMAT)
        host_raw, after = hostport[: close + 1], hostport[close + 1:]
        if after and not after.startswith(":"):
            raise UnsafeUrl(INVALID_FORMAT)
        port_raw = after[1:] if after else None
    else:
        host_raw, colon, port_raw_s = hostport.partition(":")
        port_raw = port_raw_s if colon else None
        if port_raw is not None and ":" in port_raw:
            raise UnsafeUrl(INVALID_FORMAT)
    if port_raw:
        if not port_raw.isdigit() or not port_raw.isascii() or int(port_raw) > 65535:
            raise UnsafeUrl(INVALID_FORMAT)
        port, explicit = int(port_raw), True
    else:
        port, explicit = DEFAULT_PORTS[scheme], False
    if not host_raw:
        raise UnsafeUrl(INVALID_FORMAT)
    host, ip = _parse_host(host_raw)
    # Path + query (fragment never travels); keep reserved characters, encode the rest.
    path_query = tail.split("#", 1)[0]
    if not path_query.startswith("/"):
        path_query = "/" + path_query
    path_query = quote(path_query, safe="/?&=;:@!$'()*+,-._~%[]")
    return _Parsed(scheme, userinfo, host, ip, port, explicit and port != DEFAULT_PORTS[scheme], path_query)


# ---------------------------------------------------------------------------------------------
# Address policy
# ---------------------------------------------------------------------------------------------

_V4_RULES: list[tuple[ipaddress.IPv4Network, str]] = [
    (ipaddress.IPv4Network("0.0.0.0/8"), "unspecified ('this network') address"),
    (ipaddress.IPv4Network("127.0.0.0/8"), "loopback address"),
    (ipaddress.IPv4Network("10.0.0.0/8"), "private address"),
    (ipaddress.IPv4Network("172.16.0.0/12"), "private address"),
    (ipaddress.IPv4Network("192.168.0.0/16"), "private address"),
    (ipaddress.IPv4Network("169.254.0.0/16"), "link-local address (cloud metadata range)"),
    (ipaddress.IPv4Network("100.64.0.0/10"), "carrier-grade NAT address"),
    (ipaddress.IPv4Network("192.0.0.0/24"), "IETF protocol assignment address"),
    (ipaddress.IPv4Network("198.18.0.0/15"), "benchmarking address"),
    (ipaddress.IPv4Network("192.0.2.0/24"), "documentation address"),
    (ipaddress.IPv4Network("198.51.100.0/24"), "documentation address"),
    (ipaddress.IPv4Network("203.0.113.0/24"), "documentation address"),
    (ipaddress.IPv4Network("224.0.0.0/4"), "multicast address"),
    (ipaddress.IPv4Network("255.255.255.255/32"), "broadcast address"),
    (ipaddress.IPv4Network("240.0.0.0/4"), "reserved address"),
]

_V6_RULES: list[tuple[ipaddress.IPv6Network, str]] = [
    (ipaddress.IPv6Network("::/128"), "unspecified address"),
    (ipaddress.IPv6Network("::1/128"), "loopback address"),
    (ipaddress.IPv6Network("fc00::/7"), "unique-local address"),
    (ipaddress.IPv6Network("fe80::/10"), "link-local address"),
    (ipaddress.IPv6Network("fec0::/10"), "site-local address"),
    (ipaddress.IPv6Network("ff00::/8"), "multicast address"),
    (ipaddress.IPv6Network("100::/64"), "discard-only address"),
    (ipaddress.IPv6Network("2001:db8::/32"), "documentation address"),
]
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_V4_COMPAT = ipaddress.IPv6Network("::/96")


def address_refusal(address: str | IPAddress) -> str | None:
    """Why a webhook must not connect to ``address`` (``None`` = public, acceptable)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv4Address):
        for net, why in _V4_RULES:
            if ip in net:
                return why
        return None if ip.is_global else "non-public address"
    for net, why in _V6_RULES:
        if ip in net:
            return why
    if ip.ipv4_mapped is not None:
        inner = address_refusal(ip.ipv4_mapped)
        return f"IPv4-mapped {inner}" if inner else None
    if ip in _NAT64:
        inner = address_refusal(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        return f"NAT64 form of {inner}" if inner else None
    if ip in _NAT64_LOCAL:
        return "local-use NAT64 address"
    if ip in _V4_COMPAT:
        return "IPv4-compatible (deprecated) address"
    if ip.sixtofour is not None:
        inner = address_refusal(ip.sixtofour)
        return f"6to4 form of {inner}" if inner else None
    if ip.teredo is not None:
        return "Teredo address"
    return None if ip.is_global else "non-public address"


def _is_dev_local_name(host: str) -> bool:
    return host == "localhost" or host.endswith(".localhost") or host.endswith(".local")


_DEV_LOOPBACK = {ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1")}


def _origin(p: _Parsed) -> str:
    h = f"[{p.host}]" if isinstance(p.ip, ipaddress.IPv6Address) else p.host
    return f"{p.scheme}://{h}" + (f":{p.port}" if p.explicit_port else "")


def _resolve_all(resolve: Resolver, host: str, port: int) -> tuple[str, ...]:
    seen: list[str] = []
    for a in resolve(host, port):
        a = str(a).split("%", 1)[0]
        try:
            a = ipaddress.ip_address(a).compressed
        except ValueError:
            raise UnsafeUrl(f"Webhook host {host} resolved to an invalid address") from None
        if a not in seen:
            seen.append(a)
    if not seen:
        raise UnsafeUrl(f"Webhook host {host} did not resolve to any address")
    return tuple(seen)


def check_url(
    url: str,
    *,
    allowed_origins: list[str] | tuple[str, ...] = (),
    production: bool,
    resolve: Resolver | None = None,
) -> SafeTarget:
    """Check ``url`` against the webhook policy; return the target or raise :class:`UnsafeUrl`.

    ``resolve(host, port) -> [ip, ...]`` is called for host names (not for IP literals); exceptions
    it raises (DNS failures) propagate unchanged so callers can retry them.
    """
    p = _parse(url)
    if p.userinfo:
        raise UnsafeUrl("Webhook URL must not contain credentials (user:password@)")
    origin = _origin(p)
    canonical = f"{origin}{p.path}"
    base = dict(url=canonical, scheme=p.scheme, host=p.host, port=p.port, origin=origin, path=p.path,
                is_ip_literal=p.ip is not None)

    allowlist = [o.strip() for o in allowed_origins if o and o.strip()]
    if allowlist:
        if origin not in allowlist:
            raise UnsafeUrl(f"Webhook origin {origin} is not in WEBHOOK_ALLOWED_ORIGINS")
        if p.ip is not None:
            return SafeTarget(**base, allowlisted=True, addresses=(p.ip.compressed,), pinned_address=p.ip.compressed)
        if resolve is None:
            return SafeTarget(**base, allowlisted=True)
        addrs = _resolve_all(resolve, p.host, p.port)
        return SafeTarget(**base, allowlisted=True, addresses=addrs, pinned_address=addrs[0])

    if p.ip is not None:
        if p.ip in _DEV_LOOPBACK:
            if production:
                raise UnsafeUrl(f"Webhook host {p.host} (loopback) is not allowed in production")
            return SafeTarget(**base, dev_local=True, addresses=(p.ip.compressed,), pinned_address=p.ip.compressed)
        why = address_refusal(p.ip)
        if why:
            raise UnsafeUrl(f"Webhook host {p.host} is not allowed: {why}")
        _check_port(p)
        return SafeTarget(**base, addresses=(p.ip.compressed,), pinned_address=p.ip.compressed)

    if _is_dev_local_name(p.host):
        if production:
            raise UnsafeUrl(f"Webhook host {p.host} is a local name, not allowed in production")
        if resolve is None:
            return SafeTarget(**base, dev_local=True)
        addrs = _resolve_all(resolve, p.host, p.port)
        return SafeTarget(**base, dev_local=True, addresses=addrs, pinned_address=addrs[0])

    _check_port(p)
    if resolve is None:
        return SafeTarget(**base)
    addrs = _resolve_all(resolve, p.host, p.port)
    for a in addrs:
        why = address_refusal(a)
        if why:
            raise UnsafeUrl(f"Webhook host {p.host} is not allowed: it resolves to {a} ({why})")
    return SafeTarget(**base, addresses=addrs, pinned_address=addrs[0])


def _check_port(p: _Parsed) -> None:
    if p.port not in ALLOWED_PORTS:
        raise UnsafeUrl(
            f"Webhook port {p.port} is not allowed (only 80 and 443 unless the origin is in WEBHOOK_ALLOWED_ORIGINS)"
        )
