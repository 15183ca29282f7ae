"""The calling address: the direct peer, or the client a trusted proxy forwarded.

``X-Forwarded-For`` is written by whoever sent the request, so it is believed only as far
as the chain of proxies is trusted: starting from the direct peer, each proxy that is
configured as trusted vouches for the hop to its left, and the first hop that is not a
trusted proxy is the client (the right-most untrusted hop; the rule of NGINX's
``real_ip_recursive`` and of MDN's ``X-Forwarded-For`` guidance). Anything left of that hop
was written by the client itself and is ignored.
"""

from __future__ import annotations

import ipaddress
import warnings
from collections.abc import Iterable
from typing import Union

from ..config import resolve
from ..errors import ConfigurationError

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: The trusted-proxy entry that trusts a peer without an IP address (a Unix socket).
UNIX = "unix"
#: At most this many hops of ``X-Forwarded-For`` are read, from the right.
MAX_HOPS = 32
#: RFC 6052's well-known prefix: IPv4 addresses translated to IPv6 (NAT64, SIIT).
NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
#: Longest text of one hop that can be an address (an IPv6 address with brackets and port).
_MAX_HOP_CHARS = 64


class TrustedProxies:
    """The networks whose ``X-Forwarded-For`` is believed.

    ``proxies`` holds addresses (``"10.0.0.7"``, ``"::1"``) or CIDR networks
    (``"10.0.0.0/8"``, ``"fd00::/8"``) as strings or :mod:`ipaddress` objects, and
    ``"unix"`` to trust a peer without an IP address (the proxy in front of a server
    listening on a Unix socket, whose requests otherwise have no address); left ``None``
    it comes from ``AIMSEC_TRUSTED_PROXIES`` (comma-separated), else none are trusted.
    Warns (``RuntimeWarning``) for a ``/0`` network: every address trusted.
    Raises :class:`ConfigurationError` for an entry that is neither, and for a network
    written with host bits (``"10.0.0.5/24"``: the proxy ``10.0.0.5``, or all of
    ``10.0.0.0/24``?).
    """

    def __init__(self, proxies: Iterable[str | Address | Network] | str | None = None) -> None:
        entries = resolve(proxies, "AIMSEC_TRUSTED_PROXIES", (), _split)
        if isinstance(entries, str):
            entries = _split(entries)
        entries = list(entries)
        #: Whether a peer without an IP address (a Unix socket) is a trusted proxy.
        self.unix = any(_is_unix(e) for e in entries)
        self.networks: tuple[Network, ...] = tuple(
            _network(e) for e in entries if not _is_unix(e))
        for network in self.networks:
            if network.prefixlen == 0:
                warnings.warn(
                    f"trusted proxy {network} makes every address of its family a trusted "
                    "proxy: a client's own left-most X-Forwarded-For hop is then believed, "
                    "and unless the proxy replaces the header rather than appending to it, "
                    "each client picks its identity. List the proxies' own addresses",
                    RuntimeWarning, stacklevel=2)

    def __contains__(self, address: Address) -> bool:
        """Whether ``address`` is a trusted proxy's; one of the NAT64 prefix (a proxy
        reached through NAT64 or SIIT) as the IPv4 address it carries, as a client's
        identity is read (:func:`client_network`)."""
        if any(address in network for network in self.networks):
            return True
        if isinstance(address, ipaddress.IPv6Address) and address in NAT64_PREFIX:
            carried = ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
            return any(carried in network for network in self.networks)
        return False

    def __bool__(self) -> bool:
        return self.unix or bool(self.networks)

    def __repr__(self) -> str:
        names = [UNIX] * self.unix + [str(n) for n in self.networks]
        return f"TrustedProxies({names})"

    def client(self, peer: Address | None, forwarded_for: list[bytes]) -> Address | None:
        """The client's address, given the direct ``peer`` (``None`` when it has no IP
        address: a Unix socket) and every ``X-Forwarded-For`` header value in order
        (several headers read as one comma-separated list).

        The peer itself when it is not a trusted proxy or nothing was forwarded. Otherwise
        the right-most hop that is not a trusted proxy; when the hops run out, or one is not
        an address, before an untrusted one is found, the last trusted address reached
        (a malformed hop cannot be told apart from a forged one), ``None`` if none was.
        Empty list elements (``"1.2.3.4, , 10.0.0.7"``, or an empty header) are skipped,
        as RFC 9110 section 5.6.1 asks of a recipient.
        """
        trusted = self.unix if peer is None else peer in self
        if not trusted or not forwarded_for:
            return peer
        joined = b",".join(forwarded_for)
        hops = joined.rsplit(b",", MAX_HOPS)
        if len(hops) > MAX_HOPS:
            hops = hops[1:]  # the left-most piece holds every hop beyond the limit
        current = peer
        for hop in reversed(hops):
            if not hop.strip():
                continue
            address = parse_address(hop)
            if address is None:
                return current
            if address not in self:
                return address
            current = address
        return current


def parse_address(raw: bytes | str | None) -> Address | None:
    """An IP address from a peer or a forwarded hop, or ``None`` if it is not one.

    Accepts ``1.2.3.4``, ``1.2.3.4:80``, ``2001:db8::1``, ``[2001:db8::1]:443`` (ports
    0-65535); drops an IPv6 zone (``%eth0``) and unwraps IPv4-mapped IPv6
    (``::ffff:1.2.3.4`` -> ``1.2.3.4``) so one host has one identity. A zone on an IPv4
    address, an empty zone, brackets around IPv4 or a port past 65535 make it not an
    address. Never raises.
    """
    if isinstance(raw, bytes):
        if len(raw) > _MAX_HOP_CHARS * 2:
            return None
        try:
            raw = raw.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    if not text or len(text) > _MAX_HOP_CHARS or not text.isascii():
        return None
    port: str | None = None
    bracketed = text.startswith("[")
    if bracketed:
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        text, port = host, (rest[1:] if rest else None)
    elif text.count(":") == 1:  # IPv4 with a port; IPv6 has at least two colons
        text, port = text.split(":")
    if port is not None and not (port.isdigit() and len(port) <= 5 and int(port) <= 65535):
        return None
    text, percent, zone = text.partition("%")
    if percent and not zone:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # a zone names an IPv6 link; brackets hold IPv6 only (RFC 3986 section 3.2.2)
    if isinstance(address, ipaddress.IPv4Address) and (percent or bracketed):
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_network(address: Address, ipv6_prefix: int = 128) -> Address | Network:
    """The identity of a calling address: IPv4 addresses as they are; an IPv6 address as
    its ``/ipv6_prefix`` network when ``ipv6_prefix`` is below 128.

    One IPv6 subscriber is usually routed a whole /64 (RFC 6177; a /56 or /48 is common
    too) and can pick a fresh address in it for every request, so counting per IPv6
    address would give one caller 2**64 identities (rate limits and lockouts evaded).
    An address of the NAT64 well-known prefix ``64:ff9b::/96`` (RFC 6052) is an IPv4
    client translated to IPv6 (a server behind SIIT or NAT64): its identity is that IPv4
    address (``64:ff9b::203.0.113.7`` -> ``203.0.113.7``), not a /64 every IPv4 client
    would share. Raises :class:`ConfigurationError` for a prefix outside 0-128.
    """
    if isinstance(address, ipaddress.IPv6Address) and checked_prefix(ipv6_prefix) < 128:
        if address in NAT64_PREFIX:
            return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
        return ipaddress.ip_network(f"{address}/{ipv6_prefix}", strict=False)
    return address


def checked_prefix(ipv6_prefix: object, name: str = "ipv6_prefix") -> int:
    """``ipv6_prefix`` if it is an IPv6 prefix length (0-128), else
    :class:`ConfigurationError` naming the setting ``name`` it came from."""
    if isinstance(ipv6_prefix, bool) or not isinstance(ipv6_prefix, int) \
            or not 0 <= ipv6_prefix <= 128:
        raise ConfigurationError(
            f"{name} must be an integer from 0 to 128 (e.g. 64); received {ipv6_prefix!r}")
    return ipv6_prefix


def _is_unix(entry: object) -> bool:
    return isinstance(entry, str) and entry.strip().lower() == UNIX


def _split(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _network(entry: str | Address | Network) -> Network:
    # ipaddress objects are read as the text they print, so that '::ffff:10.0.0.7' given
    # as an IPv6Address names the IPv4 host peers are matched as, as the string does
    text = str(entry).strip()
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise ConfigurationError(
            f"trusted proxy {entry!r} is not an IP address or CIDR network; expected e.g. "
            f"'10.0.0.7', '10.0.0.0/8' or 'fd00::/8' ({exc})") from exc
    try:
        ipaddress.ip_network(text)
    except ValueError:  # an address with a prefix length: which one was meant?
        raise ConfigurationError(
            f"trusted proxy {entry!r} has host bits set: write '{text.split('/')[0]}' to "
            f"trust that proxy, or '{network}' to trust every host of its network") from None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:  # '::ffff:10.0.0.7' names the IPv4 host peers are matched as
            return ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
    return network
