"""Who is calling: API keys, peers, trusted proxies and X-Forwarded-For, through the
middleware on a raw ASGI harness."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aimsec_core import AimsecMiddleware, ConfigurationError
from aimsec_core.serving import TrustedProxies, key_identity, parse_address, resolve_secret
from aimsec_core.serving.addresses import MAX_HOPS

from .asgi import Recorder, call

SECRET = "s" * 32
PROXY = ("10.0.0.5", 443)


def identity(headers=(), *, peer=("203.0.113.7", 50000), **options) -> str:
    app = Recorder()
    options.setdefault("key_secret", SECRET)
    call(AimsecMiddleware(app, **options), headers, peer=peer)
    return app.client


def xff(*values: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-forwarded-for", v.encode("utf-8")) for v in values]


# -- API keys ------------------------------------------------------------------------------

def test_api_key_becomes_a_keyed_hash_and_never_the_key():
    seen = identity([(b"x-api-key", b"sk-live-abcdef")])
    assert seen == key_identity(b"sk-live-abcdef", SECRET.encode())
    assert seen.startswith("key:") and len(seen) == len("key:") + 16
    assert "sk-live" not in seen
    int(seen[4:], 16)  # hex digits


def test_same_key_same_identity_other_key_or_secret_other_identity():
    one = identity([(b"x-api-key", b"alpha")])
    assert identity([(b"x-api-key", b" alpha ")], peer=("198.51.100.1", 1)) == one
    assert identity([(b"x-api-key", b"beta")]) != one
    assert identity([(b"x-api-key", b"alpha")], key_secret="t" * 32) != one


def test_key_header_name_is_configurable_and_case_insensitive():
    seen = identity([(b"Authorization", b"Bearer abc")], api_key_header="authorization")
    assert seen == key_identity(b"Bearer abc", SECRET.encode())
    assert identity([(b"x-api-key", b"abc")], api_key_header=None) == "203.0.113.7"


@pytest.mark.parametrize("headers", [
    [(b"x-api-key", b"")],
    [(b"x-api-key", b"   ")],
    [(b"x-api-key", b""), (b"x-api-key", b"  ")],
    [(b"x-api-key", b"k" * 5000)],                      # longer than any real key
])
def test_unusable_keys_fall_back_to_the_address(headers):
    assert identity(headers) == "203.0.113.7"


def test_with_api_keys_listed_an_invented_key_does_not_make_a_new_client():
    # an attacker sending a fresh key per request would otherwise shed its rate limit
    accepted = ["alpha", b"beta"]
    assert identity([(b"x-api-key", b"alpha")], api_keys=accepted) \
        == key_identity(b"alpha", SECRET.encode())
    assert identity([(b"x-api-key", b" beta")], api_keys=accepted) \
        == key_identity(b"beta", SECRET.encode())
    for invented in (b"alpha2", b"gamma", b"ALPHA"):
        assert identity([(b"x-api-key", invented)], api_keys=accepted) == "203.0.113.7"
    assert identity([(b"x-api-key", b"gamma")], api_keys=[]) == "203.0.113.7"


@pytest.mark.parametrize("bad", ["alpha", b"alpha", [""], ["  "], [None], ["k" * 5000]])
def test_unusable_api_keys_are_configuration_errors(bad):
    with pytest.raises(ConfigurationError, match="api_keys") as info:
        AimsecMiddleware(Recorder(), key_secret=SECRET, api_keys=bad)
    assert "alpha" not in str(info.value)


def test_secret_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("AIMSEC_CLIENT_KEY_SECRET", "e" * 32)
    seen = identity([(b"x-api-key", b"alpha")], key_secret=None)
    assert seen == key_identity(b"alpha", b"e" * 32)


def test_an_empty_secret_in_the_environment_is_refused(monkeypatch):
    monkeypatch.setenv("AIMSEC_CLIENT_KEY_SECRET", "")
    with pytest.raises(ConfigurationError, match="set but empty"):
        AimsecMiddleware(Recorder())


def test_generated_secret_is_one_per_process(monkeypatch):
    monkeypatch.delenv("AIMSEC_CLIENT_KEY_SECRET", raising=False)
    assert resolve_secret() == resolve_secret()
    assert len(resolve_secret()) == 32
    first = identity([(b"x-api-key", b"alpha")], key_secret=None)
    assert identity([(b"x-api-key", b"alpha")], key_secret=None) == first


def test_short_secret_is_refused_without_echoing_it():
    with pytest.raises(ConfigurationError, match="at least 16 bytes") as info:
        AimsecMiddleware(Recorder(), key_secret="tooshort")
    assert "tooshort" not in str(info.value)


def test_secret_stays_out_of_the_repr():
    assert SECRET not in repr(AimsecMiddleware(Recorder(), key_secret=SECRET))


# -- peers and proxies ---------------------------------------------------------------------

def test_peer_address_without_proxies():
    assert identity() == "203.0.113.7"
    assert identity(peer=("2001:DB8:0::1", 1), ipv6_prefix=128) == "2001:db8::1"  # canonical
    assert identity(peer=("::ffff:192.0.2.9", 1)) == "192.0.2.9"  # one host, one identity


@pytest.mark.parametrize("peer", [None, (), ("", 0), ("/run/app.sock",), ("not-an-ip", 1), (5,)])
def test_no_usable_peer_is_anonymous(peer):
    assert identity(peer=peer) == "anonymous"


def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored():
    assert identity(xff("198.51.100.66"), trusted_proxies=["10.0.0.5"]) == "203.0.113.7"
    assert identity(xff("198.51.100.66"), trusted_proxies=[]) == "203.0.113.7"


def test_trusted_proxy_forwards_the_client():
    assert identity(xff("198.51.100.66"), peer=PROXY, trusted_proxies=["10.0.0.5"]) \
        == "198.51.100.66"


def test_right_most_untrusted_hop_wins_over_what_the_client_wrote():
    # the client wrote 1.1.1.1 itself; proxy 10.0.0.9 saw 198.51.100.66; 10.0.0.5 saw 10.0.0.9
    seen = identity(xff("1.1.1.1, 198.51.100.66, 10.0.0.9"), peer=PROXY,
                    trusted_proxies=["10.0.0.0/24"])
    assert seen == "198.51.100.66"


def test_several_forwarded_for_headers_read_as_one_list():
    seen = identity(xff("1.1.1.1", "198.51.100.66, 10.0.0.9"), peer=PROXY,
                    trusted_proxies=["10.0.0.0/24"])
    assert seen == "198.51.100.66"


def test_every_hop_trusted_gives_the_left_most():
    assert identity(xff("10.0.0.7, 10.0.0.9"), peer=PROXY,
                    trusted_proxies=["10.0.0.0/8"]) == "10.0.0.7"


def test_ipv6_proxies_and_clients():
    seen = identity(xff("2001:db8:cafe::17, fd00::2"), peer=("fd00::1", 443),
                    trusted_proxies=["fd00::/8"], ipv6_prefix=128)
    assert seen == "2001:db8:cafe::17"
    seen = identity(xff("[2001:db8::5]:4711"), peer=("fd00::1", 443), trusted_proxies=["fd00::/8"],
                    ipv6_prefix=128)
    assert seen == "2001:db8::5"
    seen = identity(xff("2001:db8:cafe::17, fd00::2"), peer=("fd00::1", 443),
                    trusted_proxies=["fd00::/8"])
    assert seen == "2001:db8:cafe::/64"  # the default: one subscriber's /64


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
@settings(max_examples=50, deadline=None)
def test_addresses_of_one_ipv6_subscriber_share_one_identity(host_a, host_b):
    # an attacker holding 2001:db8:1:2::/64 picks a fresh address per request
    network = int(ipaddress.ip_address("2001:db8:1:2::"))
    peers = [str(ipaddress.IPv6Address(network + host)) for host in (host_a, host_b)]
    seen = {identity(peer=(peer, 1)) for peer in peers}
    assert seen == {"2001:db8:1:2::/64"}
    assert identity(peer=(peers[0], 1), ipv6_prefix=56) == "2001:db8:1::/56"
    assert identity(peer=("2001:db8:1:3::1", 1)) != "2001:db8:1:2::/64"


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
@settings(max_examples=50, deadline=None)
def test_ipv4_clients_translated_to_ipv6_keep_one_identity_each(a, b):
    # Behind NAT64/SIIT every IPv4 client arrives as 64:ff9b::<its IPv4>: counted by /64,
    # all of them were one client ("64:ff9b::/64"), so one abuser locked every one out.
    peers = [f"64:ff9b::{ipaddress.IPv4Address(v)}" for v in (a, b)]
    seen = [identity(peer=(peer, 1)) for peer in peers]
    assert seen == [str(ipaddress.IPv4Address(a)), str(ipaddress.IPv4Address(b))]
    # ipv6_prefix=128 keeps single addresses as they are
    assert identity(peer=(peers[0], 1), ipv6_prefix=128) == str(ipaddress.ip_address(peers[0]))
    assert identity(peer=("64:ff9b:0:0:1::7", 1)) == "64:ff9b::/64"  # outside the /96


def test_ipv6_prefix_from_the_environment_and_checked(monkeypatch):
    monkeypatch.setenv("AIMSEC_IPV6_PREFIX", "48")
    assert identity(peer=("2001:db8:1:2::9", 1)) == "2001:db8:1::/48"
    assert identity(peer=("192.0.2.9", 1)) == "192.0.2.9"  # IPv4 is never widened
    monkeypatch.setenv("AIMSEC_IPV6_PREFIX", "sixty-four")
    with pytest.raises(ConfigurationError, match="AIMSEC_IPV6_PREFIX"):
        identity()
    for bad in (-1, 129, True, 64.0):
        with pytest.raises(ConfigurationError, match="ipv6_prefix"):
            identity(ipv6_prefix=bad)


def test_a_proxy_reached_through_nat64_matches_its_ipv4_entry():
    """A proxy at 10.0.0.5 reached through NAT64 (64:ff9b::a00:5) was not trusted, so
    every client behind it took the proxy's identity; the client's own NAT64 address
    already counted as the IPv4 it carries."""
    assert identity(xff("198.51.100.66"), peer=("64:ff9b::10.0.0.5", 443),
                    trusted_proxies=["10.0.0.5"]) == "198.51.100.66"
    assert identity(xff("198.51.100.66"), peer=("64:ff9b::10.0.0.6", 443),
                    trusted_proxies=["10.0.0.5"]) != "198.51.100.66"


def test_ipv4_mapped_peer_matches_an_ipv4_proxy_entry():
    assert identity(xff("198.51.100.66"), peer=("::ffff:10.0.0.5", 443),
                    trusted_proxies=["10.0.0.0/24"]) == "198.51.100.66"
    assert identity(xff("198.51.100.66"), peer=PROXY,
                    trusted_proxies=["::ffff:10.0.0.5"]) == "198.51.100.66"


@pytest.mark.parametrize("value", [
    "garbage", "unknown", "", " , ", "300.1.1.1", "1.2.3", "01.2.3.4", "[::1", "::1]:80",
    "1.2.3.4:80:90", "ａ.b.c.d", "\x00", "1.2.3.4/24", "a" * 10_000,
])
def test_malformed_hop_stops_at_the_last_trusted_address(value):
    # Only a trusted proxy's own address is known for sure; the malformed text never is.
    seen = identity(xff(value), peer=PROXY, trusted_proxies=["10.0.0.5"])
    assert seen == "10.0.0.5"
    seen = identity(xff(f"{value}, 10.0.0.9"), peer=PROXY, trusted_proxies=["10.0.0.0/24"])
    assert seen == "10.0.0.9"


@pytest.mark.parametrize("values", [("198.51.100.66, , 10.0.0.9",), ("198.51.100.66,",),
                                    ("198.51.100.66", ""), ("198.51.100.66", " , ")])
def test_empty_list_elements_are_skipped(values):
    # RFC 9110 section 5.6.1: a recipient ignores empty list elements (they stopped the
    # walk at the proxy, so every client behind it shared the proxy's identity)
    assert identity(xff(*values), peer=PROXY, trusted_proxies=["10.0.0.0/24"]) \
        == "198.51.100.66"


def test_malformed_text_left_of_the_client_is_never_read():
    assert identity(xff("garbage, 198.51.100.66"), peer=PROXY,
                    trusted_proxies=["10.0.0.5"]) == "198.51.100.66"


def test_hops_beyond_the_limit_are_not_read():
    chain = ", ".join(["198.51.100.66"] + ["10.0.0.9"] * 40)
    assert identity(xff(chain), peer=PROXY, trusted_proxies=["10.0.0.0/24"]) == "10.0.0.9"


@pytest.mark.parametrize("peer", [None, ("", 0), ("/run/app.sock",)])
def test_a_trusted_unix_socket_proxy_forwards_the_client(peer):
    # nginx in front of the server over a Unix socket: no peer address, so every caller
    # was "anonymous" (never throttled by the default policy), with no way to say the
    # socket's peer is the proxy
    assert identity(xff("198.51.100.66"), peer=peer, trusted_proxies=["unix"]) \
        == "198.51.100.66"
    assert identity(xff("1.1.1.1, 198.51.100.66, 10.0.0.9"), peer=peer,
                    trusted_proxies=["10.0.0.0/24", "UNIX"]) == "198.51.100.66"
    # nothing believable forwarded: no address is known
    for values, expected in (((), "anonymous"), (("garbage",), "anonymous"),
                             (("",), "anonymous"), (("10.0.0.9",), "10.0.0.9"),
                             (("garbage, 10.0.0.9",), "10.0.0.9")):
        assert identity(xff(*values), peer=peer,
                        trusted_proxies=["unix", "10.0.0.0/24"]) == expected
    # untrusted by default, and "unix" trusts no IP peer
    assert identity(xff("198.51.100.66"), peer=peer) == "anonymous"
    assert identity(xff("198.51.100.66"), trusted_proxies=["unix"]) == "203.0.113.7"


def test_forwarded_for_over_an_untrusted_unix_socket_warns_once(caplog):
    app = Recorder()
    wrapped = AimsecMiddleware(app, key_secret=SECRET)
    with caplog.at_level("WARNING", logger="aimsec.serving"):
        for _ in range(3):
            call(wrapped, xff("198.51.100.66"), peer=None)
        call(wrapped, peer=None)  # nothing forwarded: nothing to say
    assert app.client == "anonymous"
    warnings = [r for r in caplog.records if "add 'unix' to trusted_proxies" in r.message]
    assert len(warnings) == 1
    caplog.clear()
    with caplog.at_level("WARNING", logger="aimsec.serving"):
        call(AimsecMiddleware(Recorder(), key_secret=SECRET, trusted_proxies=["unix"]),
             xff("garbage"), peer=None)
        call(AimsecMiddleware(Recorder(), key_secret=SECRET), peer=None)
    assert not caplog.records


def test_unix_proxy_from_the_environment(monkeypatch):
    monkeypatch.setenv("AIMSEC_TRUSTED_PROXIES", "unix, 10.0.0.5")
    assert identity(xff("198.51.100.66"), peer=None) == "198.51.100.66"
    assert repr(TrustedProxies()) == "TrustedProxies(['unix', '10.0.0.5/32'])"
    assert TrustedProxies(["unix"]) and not TrustedProxies([])


def test_trusted_proxies_from_the_environment(monkeypatch):
    monkeypatch.setenv("AIMSEC_TRUSTED_PROXIES", "192.0.2.0/24, 10.0.0.5")
    assert identity(xff("198.51.100.66"), peer=PROXY) == "198.51.100.66"
    assert identity(xff("198.51.100.66"), peer=PROXY, trusted_proxies=[]) == "10.0.0.5"


@pytest.mark.parametrize("bad", ["10.0.0.300", "proxy.internal", "10.0.0.0/33", ""])
def test_invalid_trusted_proxy_is_a_configuration_error(bad):
    with pytest.raises(ConfigurationError, match="trusted proxy"):
        TrustedProxies([bad])


@pytest.mark.parametrize("entry, proxy, network", [
    ("10.0.0.5/24", "10.0.0.5", "10.0.0.0/24"), ("fd00::7/64", "fd00::7", "fd00::/64"),
    ("::ffff:10.0.0.5/120", "::ffff:10.0.0.5", "::ffff:a00:0/120"),
])
def test_trusted_proxy_with_host_bits_is_a_configuration_error(entry, proxy, network):
    # '10.0.0.5/24' (an interface's address as `ip addr` prints it) silently trusted all
    # 256 hosts of 10.0.0.0/24, any of which could then forge X-Forwarded-For
    with pytest.raises(ConfigurationError, match="host bits") as info:
        TrustedProxies([entry])
    assert f"'{proxy}'" in str(info.value) and f"'{network}'" in str(info.value)
    assert identity(xff("198.51.100.66"), peer=("10.0.0.6", 1),
                    trusted_proxies=["10.0.0.0/24"]) == "198.51.100.66"


@pytest.mark.parametrize("everything", ["0.0.0.0/0", "::/0", "::ffff:0:0/96"])
def test_trusting_every_address_warns(everything):
    # every hop is then trusted, the client-written left-most one too: behind a proxy that
    # appends to X-Forwarded-For, a client picks its identity (and a fresh one per call)
    with pytest.warns(RuntimeWarning, match="every address"):
        TrustedProxies(["10.0.0.5", everything])
    with pytest.warns(RuntimeWarning):
        seen = identity(xff("6.6.6.6, 198.51.100.66"), peer=PROXY,
                        trusted_proxies=[everything, "0.0.0.0/0"])
    assert seen == "6.6.6.6"  # as configured; the warning says why


def test_trusted_proxies_take_ipaddress_objects():
    proxies = TrustedProxies([ipaddress.ip_address("10.0.0.5"),
                              ipaddress.ip_network("fd00::/8")])
    assert ipaddress.ip_address("10.0.0.5") in proxies
    assert ipaddress.ip_address("fd00::9") in proxies
    assert ipaddress.ip_address("10.0.0.6") not in proxies


@pytest.mark.parametrize("entry", [ipaddress.ip_address("::ffff:10.0.0.5"),
                                   ipaddress.ip_network("::ffff:10.0.0.0/120")])
@pytest.mark.parametrize("peer", [PROXY, ("::ffff:10.0.0.5", 443)])
def test_ipv4_mapped_proxy_objects_match_as_their_strings_do(entry, peer):
    # given as an ipaddress object, the IPv4-mapped form (what a dual-stack server shows as
    # its proxy's address) was kept as an IPv6 network that no peer is matched against
    # (peers are unwrapped to IPv4): the proxy was untrusted, and every client behind it
    # shared the proxy's identity
    assert identity(xff("198.51.100.66"), peer=peer, trusted_proxies=[entry]) \
        == "198.51.100.66"
    assert identity(xff("198.51.100.66"), peer=peer, trusted_proxies=[str(entry)]) \
        == "198.51.100.66"


def test_an_interface_object_is_refused_as_its_string_is():
    with pytest.raises(ConfigurationError, match="host bits"):
        TrustedProxies([ipaddress.ip_interface("10.0.0.5/24")])


@pytest.mark.parametrize("raw, expected", [
    ("1.2.3.4", "1.2.3.4"), ("1.2.3.4:8080", "1.2.3.4"), (" 1.2.3.4 ", "1.2.3.4"),
    ("[::1]:443", "::1"), ("[::1]", "::1"), ("fe80::1%eth0", "fe80::1"),
    (b"2001:db8::1", "2001:db8::1"), ("::ffff:1.2.3.4", "1.2.3.4"),
])
def test_parse_address(raw, expected):
    assert str(parse_address(raw)) == expected


@pytest.mark.parametrize("raw", [
    None, 5, b"\xff\xfe", "[::1]x", "1.2.3.4:", "1.2.3.4 5",
    # a zone belongs to an IPv6 address; brackets hold IPv6 only (RFC 3986); ports stop
    # at 65535: each of these was read as 1.2.3.4 or fe80::1
    "1.2.3.4%eth0", "[1.2.3.4]", "[1.2.3.4]:80", "1.2.3.4:65536", "1.2.3.4:99999",
    "[::1]:65536", "fe80::1%", "[fe80::1%]:80",
])
def test_parse_address_refuses_without_raising(raw):
    assert parse_address(raw) is None


@settings(max_examples=200, deadline=None)
@given(address=st.ip_addresses(), port=st.integers(0, 99_999), zone=st.text(
    st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="%,[]"),
    max_size=8))
def test_parse_address_reads_every_written_form_and_no_broken_one(address, port, zone):
    expected = getattr(address, "ipv4_mapped", None) or address
    if address.version == 4:
        forms = {str(address): True, f"{address}:{port}": port <= 65535,
                 f"[{address}]": False, f"{address}%{zone}": False}
    else:
        zoned = f"{address}%{zone}" if address.ipv4_mapped is None else None
        forms = {str(address): True, f"[{address}]": True,
                 f"[{address}]:{port}": port <= 65535, f"{address}%": False}
        if zoned is not None:
            forms[zoned] = bool(zone)
    for text, valid in forms.items():
        assert parse_address(text) == (expected if valid else None), text


# -- properties ----------------------------------------------------------------------------

_trusted = TrustedProxies(["10.0.0.0/8", "fd00::/8"])
_untrusted_ips = st.one_of(
    st.ip_addresses(v=4, network="198.51.100.0/24"), st.ip_addresses(v=6, network="2001:db8::/32"))
_trusted_ips = st.one_of(
    st.ip_addresses(v=4, network="10.0.0.0/8"), st.ip_addresses(v=6, network="fd00::/8"))
_anything = st.one_of(st.text(max_size=30), st.ip_addresses().map(str))


@settings(max_examples=200, deadline=None)
@given(prefix=st.lists(_anything, max_size=10), client=_untrusted_ips,
       suffix=st.lists(_trusted_ips, max_size=10), peer=_trusted_ips,
       split=st.integers(0, 20))
def test_what_the_client_writes_never_changes_who_it_is(prefix, client, suffix, peer, split):
    """Whatever stands left of the right-most untrusted hop, in however many headers, the
    client is that hop."""
    hops = [h.replace(",", " ") for h in prefix] + [str(client)] + [str(h) for h in suffix]
    cut = min(split, len(hops))  # several headers: the list split between two hops
    headers = [", ".join(part).encode("utf-8") for part in (hops[:cut], hops[cut:]) if part]
    if len(hops) <= MAX_HOPS:
        assert _trusted.client(peer, headers) == client


@settings(max_examples=100, deadline=None)
@given(forwarded=st.lists(st.binary(max_size=100), max_size=5), peer=_untrusted_ips)
def test_an_untrusted_peer_is_always_the_client(forwarded, peer):
    assert _trusted.client(peer, forwarded) == peer
