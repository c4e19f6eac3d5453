"""Where a webhook may be POSTed: anywhere but a link-local address.

An IPv4 address must be written as ``a.b.c.d``: a number in another spelling (``2130706433``,
``0x7f.1``) is refused as written, by the CRD and the spec alike (``number_spelling``).

Clouds serve instance metadata, with the node's credentials, on link-local addresses
(169.254.169.254, fd00:ec2::254): a webhook URL is written by whoever creates an endpoint, and
the workers that POST it run with the node's network. The spec refuses such addresses as
literals (``literal_refusal``); the worker refuses, before each POST, a name that resolves to
one (``check``), and connects to the addresses it checked, not to what a second lookup answers
(a name's server could answer a harmless address to the check and the metadata address to the
HTTP client: DNS rebinding). Loopback and private addresses stay allowed: a webhook receiver in
the cluster, or on this machine under ``infermodes up``, is the common case.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from infermodes.settings import CONTROL, SPACE

METADATA_NETWORKS = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::254/128"),  # the EC2 metadata service over IPv6
)
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
# what urlsplit refuses in a URL's user name and host (the netloc), which the spec's validation
# (literal_refusal) reads with it: characters whose NFKC form holds '/', '?', '#', '@' or ':'
NETLOC_REFUSED = (
    "\u2047\u2048\u2049\u2100\u2101\u2105\u2106\u2a74\ufe13\ufe16\ufe55\ufe56\ufe5f\ufe6b"
    "\uff03\uff0f\uff1a\uff1f\uff20"
)
# a scheme httpx speaks, in any case (a URL's scheme is case-insensitive): what makes a text
# a webhook's URL, in a spec's field as in the platform API's NotificationConfig (``names_webhook``)
WEBHOOK_SCHEME = r"[hH][tT][tT][pP][sS]?://"
# a scheme httpx speaks (any case); a host (a name, an IPv4 or a bracketed IPv6 address) after
# what may be a user name; a port; no space or control character anywhere
WEBHOOK_PATTERN = (
    r"^" + WEBHOOK_SCHEME + r"([^/?#\[\]" + NETLOC_REFUSED + SPACE + CONTROL + r"]*@)?"
    r"(\[[0-9a-zA-Z:.%]+\]|[^/?#" + NETLOC_REFUSED + SPACE + CONTROL + r"@:\[\]]+)(:[0-9]{1,5})?"
    r"([/?#][^" + SPACE + CONTROL + r"]*)?$"
)
WEBHOOK_MAX_LENGTH = 2048
# a URL whose port is 0 or above 65535 (of the five digits WEBHOOK_PATTERN allows), after a host
# as WEBHOOK_PATTERN takes it: the C library takes a port modulo 65536, so 99999 would POST to
# 34463, a port no one wrote; RE2 (the CRD's rule) and Python's re agree on it
PORT_OUT_OF_RANGE = (
    r"(?i)^https?://([^/?#]*@)?([^/?#@:\[\]]*|\[[^/?#\]]*\]):"
    r"(?P<port>0+|[7-9][0-9]{4}|6[6-9][0-9]{3}|65[6-9][0-9]{2}|655[4-9][0-9]|6553[6-9])([/?#]|$)"
)
# a host all numbers (decimal, octal with a leading 0, hex with 0x), one to four of them, which
# the C library reads as an IPv4 address; RE2 and Python's re agree on it
NUMBER_HOST = r"(0[xX][0-9a-fA-F]*|[0-9]+)([.](0[xX][0-9a-fA-F]*|[0-9]+)){0,3}"
# the spec's CEL rule (RE2, run by the API server at kubectl apply) for the literal forms of
# ``METADATA_NETWORKS`` a URL is most often written in, as its whole host (the part after the
# last '@', before a port or the path), with trailing dots and IPv4-mapped addresses in any
# spelling, a zone or none (the API server's ip() refuses those; the worker and the operator
# drop a zone, ``refused_address``); ``address_cel`` reads every other spelling of an address,
# and the worker (``refusal``) a name or number that resolves to one
LITERAL_LINK_LOCAL_CEL = (
    r"(?i)^https?://([^/?#]*@)?"
    r"(169\.254\.[0-9]+\.[0-9]+\.*|\[(fe[89ab][0-9a-f]:[^\]]*|fd00:ec2::254"
    r"|[0:]*:ffff:(169\.254\.[0-9]+\.[0-9]+|a9fe:[0-9a-f]+)(%[^\]]*)?)\])(:[0-9]*)?([/?#]|$)"
)


def carrying(network: ipaddress.IPv4Network) -> list[ipaddress.IPv6Network]:
    """The IPv6 networks whose addresses carry one of ``network`` (``carried_ipv4``) and which
    the API server's ip() parses: NAT64's, 6to4's and the IPv4-compatible form's."""
    return [
        ipaddress.IPv6Network((int(NAT64_PREFIX.network_address) | int(network.network_address),
                               96 + network.prefixlen)),
        ipaddress.IPv6Network((int(network.network_address), 96 + network.prefixlen)),
        ipaddress.IPv6Network((0x2002 << 112 | int(network.network_address) << 80,
                               16 + network.prefixlen)),
    ]  # fmt: skip


REFUSED_NETWORKS = tuple(
    refused
    for network in METADATA_NETWORKS
    for refused in (
        [network, *carrying(network)] if isinstance(network, ipaddress.IPv4Network) else [network]
    )
)


def bracket_cel(field: str) -> str:
    """A CEL rule refusing ``self.<field>`` when the host it gives in brackets is one Python's
    URL parser refuses, which the spec's validation then could not read: an IPv6 address
    (one zone at most, not empty), or an IPvFuture ``v<hex>.<...>``. The API server's ip()
    refuses IPv4-mapped addresses, which Python takes: an ffff group is read as fffe, which
    is as valid and maps nothing."""
    return (f"!has(self.{field}) || ![self.{field}.substring(self.{field}.indexOf('://') + 3)"
            ".find('^[^/?#]*')].exists(authority, authority.contains('[') && "
            "[authority.substring(authority.indexOf('[') + 1, authority.indexOf(']'))]"
            ".exists(h, !(h.startsWith('v') ? h.matches('^v[a-fA-F0-9]+[.].+$') : "
            "(h.contains(':') && [h.split('%')].all(parts, size(parts) == 1 || "
            "(size(parts) == 2 && size(parts[1]) > 0)) && "
            "isIP(h.split('%')[0].lowerAscii().replace('ffff', 'fffe'))))))")  # fmt: skip


def host_cel(field: str, refused: str) -> str:
    """A CEL rule refusing ``self.<field>`` when ``refused`` (a condition on ``h``) holds for
    its host as ``literal_refusal`` takes it, from the text (a URL the API server's url()
    cannot parse still reaches the operator): no zone, no trailing dots."""
    # each [value].exists(name, ...) names a value once (the API server's CEL has no bind)
    return (f"!has(self.{field}) || !["
            f"self.{field}.substring(self.{field}.indexOf('://') + 3).find('^[^/?#]*')]"
            ".exists(authority, [authority.substring(authority.lastIndexOf('@') + 1)]"
            ".exists(hostport, [(hostport.startsWith('[') ? "
            "hostport.substring(1, hostport.indexOf(']')) : hostport.find('^[^:]*'))"
            f".split('%')[0].find('^.*[^.]')].exists(h, {refused})))")  # fmt: skip


def address_cel(field: str) -> str:
    """A CEL rule refusing ``self.<field>`` when its host is an address ``refused_address``
    refuses, in any spelling the API server's ip() reads (a longhand or zero-padded IPv6, the
    IPv6 forms that carry an IPv4 one)."""
    networks = ", ".join(f"'{network}'" for network in REFUSED_NETWORKS)
    return host_cel(field, f"isIP(h) && [{networks}].exists(n, cidr(n).containsIP(h))")


def number_cel(field: str) -> str:
    """A CEL rule refusing ``self.<field>`` when its host is an IPv4 address written otherwise
    than as ``a.b.c.d`` (``number_spelling``); the API server's isIP(), as Python, takes no
    leading zero."""
    return host_cel(field, f"h.matches('^{NUMBER_HOST}$') && !isIP(h)")


Resolver = Callable[[str], list[str]]


def refused_address(address: str) -> bool:
    """Whether ``address`` (an IP literal) is one a webhook may not reach."""
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        ip = carried_ipv4(ip) or ip
    return any(ip in network for network in METADATA_NETWORKS)


def carried_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries, which a translator or the stack may reach instead:
    IPv4-mapped (``::ffff:a.b.c.d``), NAT64's well-known prefix (``64:ff9b::a.b.c.d``, which
    a DNS64 resolver answers for any IPv4 name), 6to4 (``2002:aabb:ccdd::``) and the
    IPv4-compatible form (``::a.b.c.d``)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in NAT64_PREFIX or ip in IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def number_spelling(host: str) -> bool:
    """Whether ``host`` is an IPv4 address written otherwise than as four decimal numbers
    without leading zeros (one number, hex, octal, fewer parts: ``2130706433``, ``0x7f.1``).
    The C library reads them as addresses, URL readers each their own way: what the spec
    shows is not where it leads (a metadata address, checked only as the worker resolves it)."""
    if not re.fullmatch(NUMBER_HOST, host):
        return False
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return True
    return False


def literal_refusal(url: str) -> str | None:
    """Why ``url`` names a refused address as its host, literally, or spells an address as a
    number; None when it does neither."""
    host = (urlsplit(url).hostname or "").rstrip(".")
    if refused_address(host):
        return f"{host} is a link-local or metadata address (where clouds serve instance metadata)"
    if number_spelling(host):
        return f"{host} is an IPv4 address written otherwise than as a.b.c.d: write it so"
    return None


def names_webhook(text: str) -> bool:
    """Whether ``text`` is meant as a webhook's URL (its scheme http or https, in any case),
    held then to the webhook's rules (``WEBHOOK_PATTERN``), not read as anything else."""
    return re.match(WEBHOOK_SCHEME, text) is not None


def port_refusal(url: str) -> str | None:
    """Why ``url``'s port cannot be reached as written (``PORT_OUT_OF_RANGE``); None when it
    can, or names none."""
    out_of_range = re.match(PORT_OUT_OF_RANGE, url)
    if out_of_range is None:
        return None
    return f"its port {out_of_range['port']} is not one of 1 to 65535"


def webhook_refusal(url: str) -> str | None:
    """Why ``url`` may not be a webhook, without showing it (its path is often its token);
    None when it may. The spec's fields check the same rule (their pattern, for the CRD, and
    ``literal_refusal``); this is the whole rule for a URL that no field held, a Secret's."""
    if len(url) > WEBHOOK_MAX_LENGTH or not re.fullmatch(WEBHOOK_PATTERN, url):
        return (
            "it must be an http(s) URL with a host, without spaces or control characters, "
            f"at most {WEBHOOK_MAX_LENGTH} characters"
        )
    return port_refusal(url) or literal_refusal(url)


def resolve(host: str) -> list[str]:
    """Every address ``host`` resolves to; none when it does not resolve (the POST then fails
    as it would have)."""
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return [str(info[4][0]) for info in found]


@dataclass(frozen=True)
class Checked:
    """A webhook's host as checked before a POST: ``refusal`` says why it may not be POSTed;
    else ``addresses`` are the ones to connect to, in the resolver's order (none: the host
    does not resolve)."""

    refusal: str | None = None
    addresses: tuple[str, ...] = ()


def check(url: str, resolver: Resolver = resolve) -> Checked:
    """``url``'s host as written, then as it resolves now (its IDNA form, as the HTTP client
    would look it up): refused if any address is a link-local or metadata one."""
    literal = port_refusal(url) or literal_refusal(url)
    if literal is not None:
        return Checked(literal)
    try:
        host = httpx.URL(url).raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError) as exc:  # as the POST itself would fail
        return Checked(f"its host cannot be read: {exc}")
    addresses = tuple(resolver(host.strip("[]")))
    for address in addresses:
        if refused_address(address):
            return Checked(
                f"{host} resolves to {address}, a link-local or metadata address (where "
                "clouds serve instance metadata)"
            )
    return Checked(addresses=addresses)
