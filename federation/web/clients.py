"""Who is at the other end of a request: the client's address, believed from X-Forwarded-For only when the
connection comes from a proxy the app was told to trust (the `trusted-proxies` setting of each app; none by
default).

    address = client_address(request)   # a str; `address.real` says whether it names one client
    address.real                         # False: an undeclared proxy's address, shared by all its clients

Per-address login limits count only real addresses: behind a proxy nobody declared, every client has the
proxy's address, and a lockout of that address would lock out every patient and every staff member.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientAddress(str):
    """A client's address; `real` is False when it is a proxy's address standing for many clients."""

    real: bool = True

    def __new__(cls, value: str, *, real: bool = True) -> "ClientAddress":
        made = super().__new__(cls, value)
        made.real = real
        return made


def proxy_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or networks ("10.0.0.5", "10.0.0.0/24", "::1") as networks; ValueError names a bad entry."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {entry!r}") from None
    return tuple(networks)


def _ip(text: str):
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def resolve(peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]) -> ClientAddress:
    """The client of a connection from `peer` carrying `forwarded_for` (X-Forwarded-For), given the trusted
    proxies: the right-most forwarded address that is not a trusted proxy, when the peer is one."""
    peer = peer or "unknown"
    peer_ip = _ip(peer)

    def is_trusted(address) -> bool:
        return address is not None and any(address in network for network in trusted)

    if is_trusted(peer_ip):
        hops = [_ip(hop) for hop in (forwarded_for or "").split(",") if hop.strip()]
        for hop in reversed(hops):
            if hop is None:
                break  # a malformed entry: nothing left of it can be believed
            if not is_trusted(hop):
                return ClientAddress(str(hop))
        return ClientAddress(peer, real=False)  # the proxy did not say who its client is
    if forwarded_for and not trusted:
        # A proxy in front that nobody declared: the peer is that proxy, shared by all its clients.
        return ClientAddress(peer, real=False)
    return ClientAddress(peer)


def client_address(request) -> ClientAddress:
    """The address of a request's client (see `resolve`), with the app's `state.trusted_proxies`."""
    trusted = getattr(request.app.state, "trusted_proxies", ())
    peer = request.client.host if request.client else None
    return resolve(peer, request.headers.get("x-forwarded-for"), trusted)
