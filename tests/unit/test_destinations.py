"""Where webhooks may go: the spec's CEL rule and its Python twin agree on literal link-local
hosts, and the worker's check catches a name that resolves to one."""

from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata
from urllib.parse import urlsplit

import pytest

from infermodes.destinations import (
    LITERAL_LINK_LOCAL_CEL,
    NETLOC_REFUSED,
    PORT_OUT_OF_RANGE,
    REFUSED_NETWORKS,
    WEBHOOK_PATTERN,
    Checked,
    check,
    literal_refusal,
    number_spelling,
    port_refusal,
    refused_address,
    webhook_refusal,
)

# RE2 (the API server's) and Python's re agree on this rule's syntax: classes, (?i), groups
CEL = re.compile(LITERAL_LINK_LOCAL_CEL)

REFUSED_BY_BOTH = [
    "http://169.254.169.254/latest/meta-data/",
    "HTTP://169.254.169.254/",
    "https://user:secret@169.254.1.1:8443/hook",
    "http://a@b@169.254.169.254/",
    "http://[fe80::1]:8080/hook",
    "http://[FE80::1]/",
    "http://[febf:1::2]/",
    "http://[fd00:ec2::254]/",
    "http://[FD00:EC2::254]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
]
ALLOWED_BY_BOTH = [
    "http://127.0.0.1:9/ok",
    "http://[::1]:9/ok",
    "http://10.0.0.1/hook",
    "https://hooks.example/services/T0/B0/x",
    "http://169.25.4.1/",
    "http://[fe8::1]/",  # 0fe8::1, not fe80::/10
    "http://[fec0::1]/",
    "http://169.254.example.com/hook",  # a name
    "http://[fe80::1]:8080@example.com/",  # a user name (the pattern refuses it); the host is
    # example.com
]


def numeric(host: str) -> list[str]:
    """The C library's reading of a host, with no DNS query (tests ask no DNS server)."""
    found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP, flags=socket.AI_NUMERICHOST)
    return [str(info[4][0]) for info in found]


@pytest.mark.parametrize("url", REFUSED_BY_BOTH)
def test_the_cel_rule_and_the_validator_refuse_literal_link_local_hosts(url: str) -> None:
    assert CEL.match(url), url
    assert literal_refusal(url) is not None, url


@pytest.mark.parametrize("url", ALLOWED_BY_BOTH)
def test_the_cel_rule_and_the_validator_leave_other_hosts(url: str) -> None:
    assert not CEL.match(url), url
    assert literal_refusal(url) is None, url


# spellings of refused addresses the regex rule cannot read: the address rule (address_cel,
# the API server's ip() and cidr()) refuses them at kubectl apply, as the operator does
LONGHAND = [
    "http://[fd00:ec2:0::254]/",
    "http://[fd00:0ec2::254]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[64:ff9b::169.254.1.1]:8080/x?y#z",
    "https://u:p@[2002:A9FE:0101::1]/",
    "http://[::169.254.169.254]/",
    "http://[0:0:0:0:0:0:a9fe:1]/",
    "http://[64:ff9b::a9fe:a9fe%25x]/",
]
# spellings the regex rule reads since the address rule cannot (ip() refuses IPv4-mapped
# addresses and a trailing dot)
REGEX_ONLY = [
    "http://169.254.169.254./x",
    "http://169.254.169.254..:80/x",
    "http://[0:0:0:0:0:ffff:a9fe:a9fe]/",
    "http://[0000:0000::ffff:169.254.1.1]/",
    # with a zone, which the worker and the operator drop (refused_address) and the regex
    # rule took for no address
    "http://[::ffff:169.254.169.254%25eth0]/",
    "http://[0:0:0:0:0:FFFF:a9fe:a9fe%25x]:80/hook",
]


def address_rule_reads(url: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address address_cel reads in ``url`` where the API server's ip() parses it (no zone,
    no trailing dot, not IPv4-mapped), as Python reads it; None elsewhere."""
    host = (urlsplit(url).hostname or "").split("%")[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    mapped = isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None
    return None if mapped else ip


@pytest.mark.parametrize("url", [*REFUSED_BY_BOTH, *LONGHAND, *REGEX_ONLY])
def test_every_literal_spelling_the_validator_refuses_one_of_the_crds_rules_refuses(
    url: str,
) -> None:
    """An address written longhand (or carrying a link-local IPv4 one) passed kubectl apply
    and failed the operator's parsing: an update of a serving endpoint made it Failed. The
    API server now refuses each at apply, by the regex rule or the address rule."""
    assert literal_refusal(url) is not None, url
    address = address_rule_reads(url)
    assert CEL.match(url) or (
        address is not None and any(address in network for network in REFUSED_NETWORKS)
    ), url


@pytest.mark.parametrize("url", ALLOWED_BY_BOTH)
def test_the_address_rule_leaves_other_hosts(url: str) -> None:
    address = address_rule_reads(url)
    assert address is None or not any(address in network for network in REFUSED_NETWORKS)


# an IPv4 address written otherwise than as four decimal numbers, which the C library reads
# (inet_aton) and URL readers read differently: 127.0.0.1 and 169.254.169.254 here
NUMBER_SPELLINGS = [
    "http://2130706433/",
    "http://0x7f.1/",
    "http://0X7F000001:80/x",
    "http://0177.0.0.1/",
    "http://127.1/",
    "https://u@10.0.1./hook",
    "http://2852039166/",
    "http://0xa9fea9fe/",
    "http://0251.0376.0251.0376/",
]


def number_rule_refuses(url: str) -> bool:
    """What number_cel refuses, as Python reads it: the host (as address_cel takes it) in
    ``NUMBER_HOST``'s spelling (RE2 and Python's re agree on it) that the API server's isIP()
    does not take (it, as Python, takes no leading zero): ``number_spelling``'s rule."""
    return number_spelling((urlsplit(url).hostname or "").rstrip("."))


@pytest.mark.parametrize("url", NUMBER_SPELLINGS)
def test_numbers_for_an_address_are_refused_at_apply_as_by_the_worker(url: str) -> None:
    """A number for an IPv4 address passed kubectl apply and the operator, and only the
    worker's lookup, as it was about to POST, read where it leads (a metadata address: refused
    then; loopback: POSTed). Every such spelling is now refused as written, by the CRD's rule
    and the spec's validation alike: write the address as a.b.c.d."""
    assert literal_refusal(url) is not None, url
    assert "a.b.c.d" in (literal_refusal(url) or "")
    assert number_rule_refuses(url), url
    assert check(url, numeric).refusal is not None, url  # the worker's too


@pytest.mark.parametrize("url", [*ALLOWED_BY_BOTH, "http://1.2.3.4./x", "http://1e100.net/",
                                 "http://0xdead.example/"])  # fmt: skip
def test_the_number_rule_leaves_addresses_as_a_b_c_d_and_names(url: str) -> None:
    assert not number_rule_refuses(url), url


@pytest.mark.parametrize(
    ("url", "ok"),
    [("https://hooks.example/x", True), ("HTTPS://hooks.example/x", True),
     ("http://user@hooks.example/x", True), ("http://[::1]:9/", True),
     ("ftp://hooks.example/x", False), ("http:///x", False), ("http://@/x", False),
     ("http://:80/x", False), ("hooks.example/x", False), ("http://exa mple.com/", False),
     ("http://[]/", False), ("http://hooks.example:123456/", False),
     ("https://hooks.example:8443/a?b=c#d", True), ("http://[fe80::1%25eth0]:80/", True),
     # brackets in a user name: Python's URL parser reads them as the host's, and refuses
     ("http://a[b]@hooks.example/", False), ("http://[::1]@hooks.example/", False),
     ("http://a]@hooks.example/", False)],
)  # fmt: skip
def test_a_webhook_is_http_with_a_host(url: str, ok: bool) -> None:
    assert bool(re.match(WEBHOOK_PATTERN, url)) is ok


def test_addresses() -> None:
    assert refused_address("169.254.169.254") and refused_address("[fe80::1%25eth0]")
    assert not refused_address("127.0.0.1") and not refused_address("hooks.example")


@pytest.mark.parametrize(
    "address",
    ["64:ff9b::a9fe:a9fe", "64:ff9b::169.254.169.254", "2002:a9fe:a9fe::1", "::169.254.169.254"],
)
def test_ipv6_addresses_that_carry_a_link_local_ipv4_are_refused(address: str) -> None:
    """NAT64's well-known prefix (a DNS64 resolver answers it for any IPv4 name), 6to4 and
    the IPv4-compatible form all carry an IPv4 address a translator may reach."""
    assert refused_address(address)
    assert check(f"http://[{address}]/hook").refusal is not None
    assert check("http://hooks.example/x", lambda host: [address]).refusal is not None


def test_ipv6_addresses_that_carry_another_ipv4_are_left() -> None:
    assert not any(map(refused_address, ["64:ff9b::a00:1", "2002:a00:1::1", "::1", "::"]))


def test_the_check_gives_the_addresses_it_checked_in_order() -> None:
    """The worker connects to these, not to what the HTTP client's own lookup would answer:
    a name's server could answer a harmless address to the check, the metadata address next
    (DNS rebinding). A name is looked up in its IDNA form, as the client would."""
    asked: list[str] = []

    def resolver(host: str) -> list[str]:
        asked.append(host)
        return ["::1", "127.0.0.1"]

    assert check("https://hooks.example:8443/x", resolver) == Checked(None, ("::1", "127.0.0.1"))
    check("http://bücher.example/x", resolver)
    check("http://[::1]:9/", resolver)
    assert asked == ["hooks.example", "xn--bcher-kva.example", "::1"]
    assert check("http://nowhere.example/", lambda host: []) == Checked(None, ())
    refused = check("http://hooks.example/", lambda host: ["10.0.0.1", "169.254.169.254"])
    assert refused.refusal is not None and refused.addresses == ()


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("https://hooks.example/T0K3N", False),
        ("http://127.0.0.1:9/hook", False),
        ("ftp://hooks.example/T0K3N", True),
        ("http:///no-host", True),
        ("http://hooks.example/with space", True),
        ("http://hooks.example/" + "x" * 2048, True),
        ("http://169.254.169.254/latest", True),
    ],
)
def test_a_webhook_from_no_field_is_held_to_the_fields_whole_rule(url: str, refused: bool) -> None:
    """A Secret's URL gets the spec fields' pattern, length and literal-address rules in one
    call, and the refusal never repeats the URL's path (often its token)."""
    reason = webhook_refusal(url)
    assert (reason is not None) is refused
    assert reason is None or "T0K3N" not in reason


@pytest.mark.parametrize(
    ("url", "port"),
    [("http://127.0.0.1:99999/x", "99999"), ("http://hooks.example:65536", "65536"),
     ("HTTPS://hooks.example:0/", "0"), ("http://[::1]:70000?t=1", "70000"),
     ("http://u:99999@hooks.example:00000#f", "00000"), ("http://h:65540/", "65540"),
     ("http://h:65600/", "65600"), ("http://h:66000/", "66000"),
     ("http://hooks.example:65535/", None), ("http://hooks.example:1/", None),
     ("http://hooks.example:08080/", None), ("http://u:99999@hooks.example/", None),
     ("http://hooks.example/x:99999", None), ("http://[::1]/", None)],
)  # fmt: skip
def test_a_webhook_port_must_be_one_the_post_reaches_as_written(url: str, port: str | None) -> None:
    """99999 passed and the POST went to 34463 (the C library takes a port modulo 65536): the
    fields' rule (the CRD's, the spec's), a Secret's and the worker's check before a POST
    refuse it, naming the port, never the URL's path."""
    assert bool(re.match(PORT_OUT_OF_RANGE, url)) is (port is not None)
    refusal = port_refusal(url)
    assert refusal == (None if port is None else f"its port {port} is not one of 1 to 65535")
    if port is not None:
        assert webhook_refusal(url) == refusal
        assert check(url, lambda host: ["127.0.0.1"]) == Checked(refusal)


def test_the_pattern_refuses_what_urlsplit_refuses_in_a_user_name_or_host() -> None:
    """A fullwidth '#' in a host passed the pattern (and kubectl apply) and made urlsplit raise
    in the spec's validation: the endpoint's update could not be parsed."""
    refused = [c for c in map(chr, range(0x80, 0x110000))
               if any(mark in unicodedata.normalize("NFKC", c) for mark in "/?#@:")]  # fmt: skip
    assert sorted(NETLOC_REFUSED) == refused
    for url in ("http://a\uff03b/", "http://u\uff20@hooks.example/", "http://h\u2100x:80/"):
        with pytest.raises(ValueError, match="NFKC"):
            urlsplit(url)
        assert re.fullmatch(WEBHOOK_PATTERN, url) is None, url
    assert re.fullmatch(WEBHOOK_PATTERN, "http://hooks.example/\uff03")  # a path may
