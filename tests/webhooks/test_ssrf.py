"""SSRF: every refused address class, ANY-address resolution, URL syntax, the setting off by default, and
refusals both when an endpoint is saved (BAD_USER_INPUT) and when a delivery is sent (a refused attempt)."""

from __future__ import annotations

import ipaddress

import pytest
import sqlalchemy as sa

from app.settings import Settings
from app.webhooks import ssrf
from app.webhooks.ssrf import UnsafeTarget, address_problem
from support import error_code, gql, register

REFUSED = {
    "127.0.0.1": "loopback",
    "127.8.9.10": "loopback",
    "::1": "loopback",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "fc00::1": "private",
    "169.254.10.10": "link-local",
    "fe80::1": "link-local",
    "224.0.0.1": "multicast",
    "ff02::1": "multicast",
    "240.0.0.1": "reserved",
    "0.0.0.0": "unspecified",
    "::": "unspecified",
    "169.254.169.254": "metadata",
    "fd00:ec2::254": "metadata",
    "100.64.0.1": "public",  # shared address space (CGNAT): not public
    "::ffff:127.0.0.1": "loopback",  # IPv4-mapped IPv6 is judged as the IPv4 address
    "::ffff:10.0.0.1": "private",
    "::ffff:169.254.169.254": "metadata",
    # every other IPv6 form that carries a refused IPv4 address is judged as that address
    "2002:7f00:1::": "loopback",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1": "metadata",  # 6to4 of 169.254.169.254
    "2002:a00:1::": "private",  # 6to4 of 10.0.0.1
    "64:ff9b::7f00:1": "loopback",  # NAT64 (RFC 6052) of 127.0.0.1
    "64:ff9b::a9fe:a9fe": "metadata",
    "::127.0.0.1": "loopback",  # IPv4-compatible (deprecated)
    "::10.0.0.1": "private",
    "64:ff9b:1::7f00:1": "local-use NAT64",  # RFC 8215: where the IPv4 address sits varies
    "2001:0:4136:e378:8000:63bf:3fff:fdd2": "Teredo",
    "2001:0:7f00:1::": "Teredo",
}
PUBLIC = ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", sorted(REFUSED))
def test_each_address_class_is_refused(address):
    problem = address_problem(ipaddress.ip_address(address))
    assert problem is not None and REFUSED[address] in problem


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address):
    assert address_problem(ipaddress.ip_address(address)) is None


def test_the_self_hosted_setting_allows_private_but_never_metadata():
    for allowed in ("127.0.0.1", "::1", "10.1.2.3", "192.168.1.1", "169.254.10.10", "::ffff:127.0.0.1"):
        assert address_problem(ipaddress.ip_address(allowed), allow_private=True) is None
    for refused in (
        "169.254.169.254",
        "fd00:ec2::254",
        "224.0.0.1",
        "0.0.0.0",
        "::ffff:169.254.169.254",
        "2002:a9fe:a9fe::",
        "64:ff9b::a9fe:a9fe",
        "2001:0:7f00:1::",
    ):
        assert address_problem(ipaddress.ip_address(refused), allow_private=True) is not None


def test_private_targets_are_off_by_default(monkeypatch):
    monkeypatch.delenv("AGENTRAIL_WEBHOOK_ALLOW_PRIVATE_TARGETS", raising=False)
    assert Settings().webhook_allow_private_targets is False
    monkeypatch.setenv("AGENTRAIL_WEBHOOK_ALLOW_PRIVATE_TARGETS", "true")
    assert Settings().webhook_allow_private_targets is True


async def test_any_bad_address_among_several_refuses():
    async def resolver(host, port):
        return ["93.184.216.34", "10.0.0.5"]

    with pytest.raises(UnsafeTarget, match=r"10\.0\.0\.5"):
        await ssrf.check_url("https://mixed.example/hook", require_https=True, allow_private=False, resolver=resolver)


async def test_a_name_resolving_to_loopback_is_refused():
    with pytest.raises(UnsafeTarget, match="loopback"):
        await ssrf.check_url("http://localhost:9/hook", require_https=False, allow_private=False)


@pytest.mark.parametrize(
    ("url", "production"),
    [
        ("ftp://example.com/x", False),
        ("file:///etc/passwd", False),
        ("http:///no-host", False),
        ("https://user:pw@example.com/", False),
        ("not a url", False),
        ("http://93.184.216.34/hook", True),  # production requires https
        ("https://example.com/" + "a" * 2100, False),
    ],
)
def test_url_syntax(url, production):
    with pytest.raises(UnsafeTarget):
        ssrf.parse_target(url, require_https=production)


async def test_endpoints_with_internal_targets_are_refused_and_nothing_is_written(client, runtime):
    owner = await register(client)
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[2002:7f00:1::]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://does-not-exist.invalid/hook",
        "ftp://example.com/",
    ]:
        result = await gql(client, "CreateWebhookEndpoint", {"input": {"url": url, "events": ["*"]}}, token=owner.token)
        assert error_code(result) == "BAD_USER_INPUT", url
        assert result["errors"][0]["extensions"]["field"] == "url"
    async with runtime.db.engine.connect() as conn:
        assert (await conn.execute(sa.text("SELECT count(*) FROM webhook_endpoints"))).scalar_one() == 0
        assert (
            await conn.execute(sa.text("SELECT count(*) FROM activity_events WHERE action LIKE 'webhook%'"))
        ).scalar_one() == 0
    # a public IP literal is fine (nothing is contacted when saving)
    ok = await gql(
        client,
        "CreateWebhookEndpoint",
        {"input": {"url": "https://93.184.216.34/hook", "events": ["*"]}},
        token=owner.token,
    )
    assert "errors" not in ok, ok
