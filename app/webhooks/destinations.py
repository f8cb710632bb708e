"""Where webhooks may go: public addresses, and the networks the operator allows.

A URL is checked when it is registered and again before every attempt, since its name may
resolve elsewhere by then, and every address the name resolves to must pass. The attempt then
connects to the very address checked, so a name that changes between the check and the
connection (DNS rebinding) gains nothing. A name that does not resolve at registration is
accepted: the check before each attempt, on the dispatcher's machine, decides. Plain http is
for addresses inside the operator's network only (allowed by a setting); a public receiver
needs https.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from urllib.parse import SplitResult, urlsplit

from app.config import Settings

IPAddress = IPv4Address | IPv6Address
_ALLOW_HINT = ("webhooks go to public addresses only, unless the operator allows the network "
               "(FT_WEBHOOK_ALLOWED_NETWORKS, or FT_WEBHOOK_ALLOW_PRIVATE=true)")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class InvalidUrl(ValueError):
    """Not a URL a webhook can be sent to: its syntax or its scheme."""


class UnresolvedHost(ValueError):
    """A host name that does not resolve now: registering it is allowed (the dispatcher's
    machine may see names the API's does not), sending to it waits until it resolves."""


class DisallowedUrl(ValueError):
    """A URL whose addresses, or whose plain http, the operator has not allowed."""


@dataclass(frozen=True)
class Policy:
    allow_private: bool = False
    networks: tuple[IPv4Network | IPv6Network, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(settings.webhook_allow_private, settings.webhook_networks)

    def refusal(self, address: IPAddress) -> str | None:
        """Why `address` may not be reached, or None when it may."""
        address = _unmapped(address)
        if address.is_unspecified or address.is_multicast or address == _BROADCAST:
            return f"{address}, which is not the address of one host"
        if is_public(address) or any(address in network for network in self.networks):
            return None
        if self.allow_private and not address.is_link_local:
            return None
        return f"{address}, a {_kind(address)} address; {_ALLOW_HINT}"


@dataclass(frozen=True)
class Destination:
    """A checked URL and the addresses to connect to, in the resolver's order."""

    scheme: str
    host: str  # the Host header: the URL's host, and its port when not the scheme's own
    hostname: str  # for TLS: the name the certificate must carry
    port: int
    target: str  # path and query
    addresses: tuple[IPAddress, ...]

    def pinned_url(self, address: IPAddress) -> str:
        """The URL with a checked address in place of the name."""
        literal = f"[{address}]" if address.version == 6 else str(address)
        return f"{self.scheme}://{literal}:{self.port}{self.target}"


def parse(url: str) -> tuple[SplitResult, int]:
    """The parts and the port of `url`, once it is an absolute http(s) URL with a host and no
    credentials."""
    if not url.isascii() or any(char.isspace() or not char.isprintable() for char in url):
        raise InvalidUrl("a webhook URL is printable ASCII without spaces: write an "
                         "international host name in punycode (xn--...) and percent-encode "
                         "the path")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise InvalidUrl(f"{url!r} is not a valid URL: {error}") from None
    if parts.scheme not in _DEFAULT_PORTS:
        raise InvalidUrl(f"a webhook URL must start with https:// or http://, not {url!r}")
    if not parts.hostname:
        raise InvalidUrl(f"the webhook URL {url!r} names no host")
    if port == 0:
        raise InvalidUrl(f"the webhook URL {url!r} names port 0")
    if parts.username is not None or parts.password is not None:
        raise InvalidUrl("a webhook URL must not hold credentials (user:password@): the "
                         "receiver authenticates each delivery by its signature")
    return parts, port or _DEFAULT_PORTS[parts.scheme]


def resolve(url: str, policy: Policy) -> Destination:
    """Check `url` against `policy` with the addresses its host resolves to now."""
    parts, port = parse(url)
    hostname = parts.hostname or ""
    try:
        found = socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise UnresolvedHost(f"the host {hostname} of the webhook URL cannot be resolved: "
                             f"{error}") from None
    # The scope of an IPv6 link-local address ("fe80::1%eth0") is not part of the address.
    addresses = list(dict.fromkeys(ip_address(str(info[4][0]).split("%")[0])
                                   for info in found))
    for address in addresses:
        reason = policy.refusal(address)
        if reason is not None:
            raise DisallowedUrl(f"the webhook URL's host {hostname} resolves to {reason}")
    if parts.scheme == "http" and any(is_public(address) for address in addresses):
        raise DisallowedUrl(f"the webhook URL's host {hostname} is a public address: use "
                            "https:// (plain http is for the operator's own networks)")
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    return Destination(parts.scheme, parts.netloc, hostname, port, target, tuple(addresses))


def is_public(address: IPAddress) -> bool:
    """Routable on the internet: not loopback, private, shared, link-local, reserved (IPv4
    mapped into IPv6 and 6to4 judged by the IPv4 address inside)."""
    address = _unmapped(address)
    if isinstance(address, IPv6Address) and address.sixtofour is not None \
            and not is_public(address.sixtofour):
        return False
    return address.is_global and not address.is_multicast and not address.is_reserved


_BROADCAST = IPv4Address("255.255.255.255")


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _kind(address: IPAddress) -> str:
    for kind, matches in (("loopback", address.is_loopback),
                          ("link-local", address.is_link_local),
                          ("private", address.is_private),
                          ("reserved", address.is_reserved)):
        if matches:
            return kind
    return "non-public"
