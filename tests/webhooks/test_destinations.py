"""The SSRF guard: which addresses and schemes a webhook may use, in every spelling of an
address that resolves to a forbidden one."""

from __future__ import annotations

from ipaddress import ip_network

import pytest
from pydantic import ValidationError

from app.config import Settings
from app.webhooks.destinations import (
    DisallowedUrl,
    InvalidUrl,
    Policy,
    UnresolvedHost,
    resolve,
)

FORBIDDEN = [
    "http://localhost:8000/hook", "http://127.0.0.1/", "http://127.1/", "http://2130706433/",
    "http://0x7f000001/", "http://[::1]/", "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/", "http://10.0.0.5/", "http://172.16.3.4/",
    "http://192.168.1.1/", "http://100.64.0.1/", "http://169.254.169.254/latest/meta-data",
    "http://[fe80::1]/", "http://[fc00::1]/", "http://[fd12:3456::1]/", "http://0.0.0.0/",
    "http://[::]/", "http://224.0.0.1/", "http://[ff02::1]/", "http://255.255.255.255/",
    "http://240.0.0.1/", "http://[2002:7f00:1::]/", "http://[64:ff9b::a00:1]/",
    "https://192.0.2.10/",
]


@pytest.mark.parametrize("url", FORBIDDEN)
def test_no_address_outside_the_internet_by_default(url: str) -> None:
    with pytest.raises(DisallowedUrl, match="resolves to"):
        resolve(url, Policy())


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://x/",
                                 "https://user:secret@8.8.8.8/", "https:///path",
                                 "http://[::1]:99999/", "https://8.8.8.8:0/", "not a url",
                                 "https://ex\u00e4mple.com/", "https://a\x00b.com/",
                                 "https://8.8.8.8/a b"])
def test_urls_that_are_no_webhook_urls(url: str) -> None:
    with pytest.raises(InvalidUrl):
        resolve(url, Policy())


def test_a_name_that_does_not_resolve_is_not_sent_to() -> None:
    with pytest.raises(UnresolvedHost, match="no-such-host.invalid"):
        resolve("https://no-such-host.invalid/hook", Policy())


def test_public_addresses_need_https() -> None:
    destination = resolve("https://8.8.8.8:8443/hooks?team=a", Policy())
    assert destination.pinned_url(destination.addresses[0]) == "https://8.8.8.8:8443/hooks?team=a"
    assert destination.host == "8.8.8.8:8443" and destination.hostname == "8.8.8.8"
    v6 = resolve("https://[2606:4700::1111]/", Policy())
    assert v6.pinned_url(v6.addresses[0]) == "https://[2606:4700::1111]:443/"
    with pytest.raises(DisallowedUrl, match="use https"):
        resolve("http://8.8.8.8/hooks", Policy())


def test_allowing_private_networks_keeps_link_local_and_non_hosts_out() -> None:
    private = Policy(allow_private=True)
    for url in ("http://10.0.0.5/", "http://localhost:8000/", "http://[fd12::1]/",
                "http://100.64.0.1/"):
        assert resolve(url, private).scheme == "http"
    for url in ("http://169.254.169.254/", "http://[fe80::1]/", "http://0.0.0.0/",
                "http://224.0.0.1/"):
        with pytest.raises(DisallowedUrl):
            resolve(url, private)


def test_allowed_networks_allow_exactly_those() -> None:
    policy = Policy(networks=(ip_network("10.20.0.0/16"), ip_network("169.254.169.254/32")))
    assert [str(a) for a in resolve("http://10.20.3.4:9000/x", policy).addresses] \
        == ["10.20.3.4"]
    assert resolve("http://169.254.169.254/", policy).port == 80
    with pytest.raises(DisallowedUrl):
        resolve("http://10.21.0.1/", policy)
    # The setting, in the settings' strict style: a mistake stops the service from starting.
    assert Policy.from_settings(Settings(webhook_allowed_networks="10.20.0.0/16, ::1")) \
        == Policy(False, (ip_network("10.20.0.0/16"), ip_network("::1/128")))
    with pytest.raises(ValidationError, match="FT_WEBHOOK_ALLOWED_NETWORKS"):
        Settings(webhook_allowed_networks="10.20.0.1/16")
