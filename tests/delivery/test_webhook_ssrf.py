"""The SSRF guard on webhook URLs: the policy itself, the configuration-time check, and delivery through the
dispatcher and aiohttp's real connector, where a refusal is a clear, final failure recorded on the attempt."""

from __future__ import annotations

import ipaddress
import random
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any
from uuid import UUID

import aiohttp
import psycopg
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from migrations.settings import MigrationSettings
from processors.delivery.errors import RefusedTargetError, RejectedError
from processors.delivery.metrics import DeliveryMetrics
from processors.delivery.settings import DeliverySettings
from processors.delivery.ssrf import EgressPolicy, GuardedResolver, check_endpoint, check_url
from scripts.database import migrated_scratch
from tests import factories
from tests.delivery.conftest import LOOPBACK_ALLOWED, MakeDispatcher, add_notification, add_webhook
from tests.delivery.receivers import HttpReceiver

Conn = psycopg.Connection[Any]
Team = tuple[factories.Patient, dict[str, factories.Provider]]
STRICT = EgressPolicy()


@pytest.mark.parametrize(
    ("address", "strict", "allowing_private"),
    [
        ("8.8.8.8", None, None),
        ("2001:4860:4860::8888", None, None),
        ("127.0.0.1", "address_loopback", None),
        ("127.8.9.10", "address_loopback", None),
        ("::1", "address_loopback", None),
        ("::ffff:127.0.0.1", "address_loopback", None),  # IPv4-mapped
        ("2002:7f00:1::", "address_loopback", None),  # 6to4 around 127.0.0.1
        ("10.1.2.3", "address_private", None),
        ("172.16.0.1", "address_private", None),
        ("192.168.1.1", "address_private", None),
        ("100.64.0.1", "address_private", None),  # shared address space (CGNAT)
        ("fc00::1", "address_private", None),
        ("169.254.1.1", "address_link_local", None),
        ("fe80::1", "address_link_local", None),
        ("169.254.169.254", "address_metadata", "address_metadata"),
        ("fd00:ec2::254", "address_metadata", "address_metadata"),
        ("::ffff:169.254.169.254", "address_metadata", "address_metadata"),
        ("224.0.0.1", "address_multicast", "address_multicast"),
        ("ff02::1", "address_multicast", "address_multicast"),
        ("0.0.0.0", "address_unspecified", "address_unspecified"),
        ("::", "address_unspecified", "address_unspecified"),
        ("255.255.255.255", "address_reserved", "address_reserved"),
        ("240.0.0.1", "address_reserved", "address_reserved"),
    ],
)
def test_which_addresses_are_refused(address: str, strict: str | None, allowing_private: str | None) -> None:
    parsed = ipaddress.ip_address(address)
    assert STRICT.refusal(parsed) == strict
    assert LOOPBACK_ALLOWED.refusal(parsed) == allowing_private


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://hooks.example.com/x", "url_scheme"),
        ("file:///etc/passwd", "url_scheme"),
        ("gopher://hooks.example.com/", "url_scheme"),
        ("javascript:alert(1)", "url_scheme"),
        ("http:///nohost", "url_invalid"),
        ("/relative/path", "url_scheme"),
        ("http://127.0.0.1:8080/hook", "address_loopback"),
        ("http://[::1]/hook", "address_loopback"),
        ("http://[::ffff:7f00:1]/hook", "address_loopback"),
        ("http://localhost/hook", "address_loopback"),
        ("http://LocalHost./hook", "address_loopback"),
        ("http://api.localhost/hook", "address_loopback"),
        ("http://10.0.0.7/hook", "address_private"),
        ("http://user:pw@192.168.0.1/hook", "address_private"),
        ("http://169.254.169.254/latest/meta-data/", "address_metadata"),
        ("http://0.0.0.0:9108/metrics", "address_unspecified"),
        # Legacy IPv4 spellings a resolver would map onto 127.0.0.1.
        ("http://127.1/hook", "url_invalid"),
        ("http://2130706433/hook", "url_invalid"),
        ("http://0x7f.0.0.1/hook", "url_invalid"),
    ],
)
def test_check_url_refuses_schemes_and_literal_addresses(url: str, reason: str) -> None:
    with pytest.raises(RefusedTargetError) as refused:
        check_url(url, STRICT)
    assert refused.value.reason == reason
    assert not refused.value.retriable


def test_check_url_lets_public_names_and_allowed_private_addresses_through() -> None:
    assert str(check_url("https://hooks.example.com/rpm?x=1", STRICT)) == "https://hooks.example.com/rpm?x=1"
    assert check_url("https://93.184.216.34/hook", STRICT).host == "93.184.216.34"
    assert check_url("http://127.0.0.1:8080/hook", LOOPBACK_ALLOWED).port == 8080
    assert check_url("http://localhost/hook", LOOPBACK_ALLOWED).host == "localhost"
    with pytest.raises(RefusedTargetError, match="address_metadata"):
        check_url("http://169.254.169.254/", LOOPBACK_ALLOWED)


def test_the_setting_defaults_to_refusing_private_targets() -> None:
    assert DeliverySettings.model_fields["delivery_webhook_allow_private"].default is False
    assert DeliverySettings(delivery_webhook_allow_private=True).egress == LOOPBACK_ALLOWED


async def test_configuration_time_check_resolves_the_name() -> None:
    # The machine's own name resolves through the system resolver (/etc/hosts here) like any endpoint's name.
    name = socket.gethostname()
    resolved = {info[4][0] for info in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)}
    refusals = {STRICT.refusal(ipaddress.ip_address(str(a).split("%")[0])) for a in resolved}
    if refusals == {None}:
        pytest.skip(f"{name} resolves to public addresses only on this machine")
    with pytest.raises(RefusedTargetError) as refused:
        await check_endpoint(f"http://{name}:8080/hook", STRICT)
    assert refused.value.reason.startswith("address_")
    assert f"{name} resolves to" in str(refused.value)
    assert set(await check_endpoint(f"http://{name}:8080/hook", LOOPBACK_ALLOWED)) <= {
        str(a).split("%")[0] for a in resolved
    }
    assert await check_endpoint("https://[2001:4860:4860::8888]/hook", STRICT) == ("2001:4860:4860::8888",)
    with pytest.raises(RejectedError) as unresolvable:
        await check_endpoint("https://no-such-host.invalid/hook", STRICT)
    assert unresolvable.value.reason == "url_unresolvable"


class RebindingDns(AbstractResolver):
    """A DNS server whose answer for a name changes between lookups (the DNS-rebinding attack): the first
    answer is public, every later one the address the attacker wants the dispatcher to reach."""

    def __init__(self, first: str, then: str) -> None:
        self.answers = [first, then]
        self.lookups = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        address = self.answers[min(self.lookups, 1)]
        self.lookups += 1
        return [
            {"hostname": host, "host": address, "port": port, "family": family, "proto": 0, "flags": 0},
        ]

    async def close(self) -> None:
        return None


@pytest.fixture
async def rebinding() -> AsyncIterator[tuple[RebindingDns, aiohttp.ClientSession]]:
    dns = RebindingDns("93.184.216.34", "127.0.0.1")
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(STRICT, dns), use_dns_cache=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield dns, session


async def test_the_resolver_refuses_a_name_that_rebinds_to_loopback(
    rebinding: tuple[RebindingDns, aiohttp.ClientSession], receiver: HttpReceiver
) -> None:
    dns, session = rebinding
    port = int(receiver.url.rsplit(":", 1)[1])
    # Configured while it pointed at a public address; at delivery time it resolves to the receiver's loopback.
    assert await dns.resolve("hooks.attacker.test", port) != []
    with pytest.raises(RefusedTargetError) as refused:
        async with session.post(f"http://hooks.attacker.test:{port}/hook", data=b"{}"):
            pass
    assert refused.value.reason == "address_loopback"
    assert "hooks.attacker.test resolves to 127.0.0.1" in str(refused.value)
    assert dns.lookups == 2
    assert receiver.requests == []


def _attempts(db: Conn, notification_id: UUID) -> list[tuple[int, str, str | None]]:
    return [
        (r[0], r[1], r[2])
        for r in db.execute(
            "SELECT a.attempt, a.outcome::text, a.error FROM delivery_attempts a"
            " JOIN notification_deliveries d ON d.id = a.delivery_id"
            " WHERE d.notification_id = %s AND d.channel = 'webhook' ORDER BY a.attempt",
            (notification_id,),
        ).fetchall()
    ]


async def test_by_default_a_loopback_webhook_is_refused_once_and_for_good(
    db: Conn,
    care_team: Team,
    receiver: HttpReceiver,
    secret: str,
    make_dispatcher: MakeDispatcher,
    metrics: DeliveryMetrics,
) -> None:
    patient, team = care_team
    add_webhook(db, patient.organization_id, receiver.url + "/hook", secret)
    nid, _ = add_notification(db, patient, team["nurse"].user_id)

    assert await make_dispatcher(webhook_policy=STRICT).run_once() == 2  # in-app + webhook

    assert receiver.requests == []
    assert _attempts(db, nid) == [(1, "dead", "address_loopback: 127.0.0.1")]
    row = db.execute(
        "SELECT status::text, attempts, last_error FROM notification_deliveries"
        " WHERE notification_id = %s AND channel = 'webhook'",
        (nid,),
    ).fetchone()
    assert row == ("dead", 1, "address_loopback: 127.0.0.1")
    assert (
        metrics.registry.get_sample_value(
            "delivery_failures_total", {"channel": "webhook", "reason": "address_loopback"}
        )
        == 1
    )
    # The same receiver, explicitly allowed (as every other delivery test does), is reached.
    nid2, _ = add_notification(db, patient, team["nurse"].user_id)
    assert await make_dispatcher().run_once() == 2
    assert len(receiver.requests) == 1
    assert [outcome for _, outcome, _ in _attempts(db, nid2)] == ["sent"]


# The schema's share of the guard (migration 0520): on INSERT/UPDATE, the literal addresses no deployment may reach.
SCHEMA_CASES = [
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[2002:a9fe:a9fe::1]/",
    "http://[fd00:ec2::254]/",
    "http://100.100.100.200/",
    "http://0.0.0.0:9108/metrics",
    "http://[::]/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    "http://255.255.255.255/",
    "http://240.1.2.3/",
    "http://127.1/hook",
    "http://2130706433/hook",
    "http://0x7f.0.0.1/hook",
    "http://010.0.0.1/hook",
    "http://user:pw@169.254.169.254:80/x?y#z",
    # Allowed by the schema (judged at delivery, by the deployment's policy or after DNS):
    "http://127.0.0.1:8080/hook",
    "http://[::1]:8080/hook",
    "http://10.0.0.7/hook",
    "http://169.254.1.1/hook",
    "http://localhost/hook",
    "https://hooks.example.com/rpm",
    "https://93.184.216.34/hook",
    "https://[2001:4860:4860::8888]/hook",
    "https://cafe.de/hook",
]


@pytest.fixture(scope="module")
def migrated() -> Iterator[str]:
    """A scratch database with every migration applied (the shared one may not have 0520 yet); yields a DSN."""
    settings = MigrationSettings()
    with migrated_scratch(settings, "ssrf") as name:
        yield settings.admin_dsn(name)


def _python_reason(url: str) -> str | None:
    try:
        check_url(url, LOOPBACK_ALLOWED)
    except RefusedTargetError as exc:
        return exc.reason
    return None


def test_the_schema_refuses_what_no_deployment_allows_with_the_dispatchers_reasons(migrated: str) -> None:
    rng = random.Random(520)
    v4 = [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(3000)]
    v4 += ["169.254.169.254", "224.0.0.0", "239.255.255.255", "240.0.0.0", "0.0.0.0", "100.100.100.200"]
    urls = [
        *SCHEMA_CASES,
        *(f"http://{a}/" for a in v4),
        *(f"http://[::ffff:{a}]/" for a in v4[:500]),
        *(
            f"http://[{ipaddress.IPv6Address((0x2002 << 112) | (int(ipaddress.IPv4Address(a)) << 80))}]/"
            for a in v4[:500]
        ),
    ]
    with psycopg.connect(migrated) as conn:
        rows = conn.execute("SELECT u, webhook_url_refusal(u) FROM unnest(%s::text[]) AS u", (urls,)).fetchall()
    schema: dict[str, str | None] = dict(rows)
    always = {"address_metadata", "address_multicast", "address_unspecified", "address_reserved", "url_invalid"}
    for url in urls:
        python = _python_reason(url)
        # The schema refuses exactly what the dispatcher refuses even when private targets are allowed.
        assert schema[url] == (python if python in always else None), url
    assert sum(reason is not None for reason in schema.values()) > 100
    for url in SCHEMA_CASES[:17]:
        assert schema[url] is not None, url


def test_an_endpoint_pointing_at_the_metadata_service_cannot_be_configured(migrated: str) -> None:
    with psycopg.connect(migrated, autocommit=True) as conn:
        org = factories.create_organization(conn)
        with pytest.raises(psycopg.errors.CheckViolation, match="webhook_endpoints_url_target"):
            add_webhook(conn, org.id, "http://169.254.169.254/latest/meta-data/iam/", "s" * 40)
        endpoint = add_webhook(conn, org.id, "https://hooks.example.com/rpm", "s" * 40)
        with pytest.raises(psycopg.errors.CheckViolation, match="webhook_endpoints_url_target"):
            conn.execute("UPDATE webhook_endpoints SET url = 'http://[::ffff:a9fe:a9fe]/' WHERE id = %s", (endpoint,))
