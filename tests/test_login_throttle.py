"""The login throttle cannot be slipped: not by a forged X-Forwarded-For, not by an address too long
to store, not by a crowd of concurrent requests, not through the admin's login form, and not when
the database fails to count (it refuses instead)."""

import logging
from collections import Counter
from datetime import UTC, datetime

import pytest
from django.db import DatabaseError
from django.test import Client, RequestFactory
from rest_framework.test import APIClient

from tests.concurrency import run_concurrently
from tests.conftest import PASSWORD, make_user
from users.models import MemberToken as AuthToken
from users.models import ThrottleCounter
from users.throttling import LoginRateThrottle, client_address, throttle_key

pytestmark = pytest.mark.django_db

WRONG = {"username": "alice", "password": "wrong"}
RIGHT = {"username": "alice", "password": PASSWORD}
KEY_LENGTH = len("login:") + 64


def login(client, payload, **headers) -> int:
    return client.post("/api/login/", payload, format="json", **headers).status_code


def admin_login(client, password: str) -> int:
    return client.post(
        "/admin/login/", {"username": "root", "password": password, "next": "/admin/"}
    ).status_code


@pytest.fixture
def operator(db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser(username="root", password=PASSWORD, email="r@x.test")


@pytest.fixture
def clock(monkeypatch):
    """The throttle's clock, set by the test: `clock.now = ...`."""

    class Clock:
        now = 1_000_000 * 60.0  # on a minute's start

    monkeypatch.setattr(LoginRateThrottle, "timer", staticmethod(lambda: Clock.now))
    return Clock


def test_a_forged_forwarded_for_is_counted_against_the_connection(api, alice, settings):
    settings.TRUSTED_PROXIES = 0
    settings.LOGIN_THROTTLE_RATE = "10/min"

    statuses = [login(api, WRONG, HTTP_X_FORWARDED_FOR=f"198.51.100.{i}") for i in range(30)]

    assert statuses == [400] * 10 + [429] * 20
    assert login(api, RIGHT, HTTP_X_FORWARDED_FOR="203.0.113.200") == 429
    assert not AuthToken.objects.exists()
    assert ThrottleCounter.objects.get().key == throttle_key(scope="login", address="127.0.0.1")


def test_behind_one_proxy_the_right_most_address_is_the_client(api, alice, settings):
    settings.TRUSTED_PROXIES = 1
    settings.LOGIN_THROTTLE_RATE = "3/min"
    proxy = {"REMOTE_ADDR": "10.0.0.1"}

    # What the client writes left of the proxy's entry changes nothing.
    first = [login(api, WRONG, HTTP_X_FORWARDED_FOR=f"192.0.2.{i}, 203.0.113.7", **proxy) for i in range(4)]
    second = login(api, WRONG, HTTP_X_FORWARDED_FOR="203.0.113.8", **proxy)

    assert first == [400, 400, 400, 429]
    assert second == 400
    assert ThrottleCounter.objects.count() == 2
    assert ThrottleCounter.objects.get(key=throttle_key(scope="login", address="203.0.113.7")).count == 4
    assert ThrottleCounter.objects.get(key=throttle_key(scope="login", address="203.0.113.8")).count == 1


@pytest.mark.parametrize("proxies", [0, 1, 2])
def test_an_overlong_or_garbage_forwarded_address_is_still_counted(api, alice, settings, proxies):
    settings.TRUSTED_PROXIES = proxies
    settings.LOGIN_THROTTLE_RATE = "3/min"
    garbage = ["9" * 300, "x" * 300 + ", " + "y" * 300, "not an address", "203.0.113.7:443", ",,,", ""]

    statuses = [login(api, WRONG, HTTP_X_FORWARDED_FOR=value) for value in garbage]

    assert statuses == [400, 400, 400, 429, 429, 429]
    counter = ThrottleCounter.objects.get()
    assert counter.count == 6
    assert len(counter.key) == KEY_LENGTH


@pytest.mark.parametrize(
    ("proxies", "remote_addr", "forwarded_for", "client"),
    [
        (0, "192.0.2.1", "203.0.113.7", "192.0.2.1"),
        (0, "192.0.2.1", None, "192.0.2.1"),
        (1, "10.0.0.1", "203.0.113.7", "203.0.113.7"),
        (1, "10.0.0.1", "1.1.1.1, 203.0.113.7", "203.0.113.7"),
        (1, "10.0.0.1", " 203.0.113.7 ", "203.0.113.7"),
        (2, "10.0.0.2", "1.1.1.1, 203.0.113.7, 10.0.0.1", "203.0.113.7"),
        (2, "10.0.0.2", "203.0.113.7", "10.0.0.2"),  # fewer entries than proxies
        (1, "10.0.0.1", None, "10.0.0.1"),
        (1, "10.0.0.1", "x" * 300, "10.0.0.1"),
        (1, "10.0.0.1", "2001:DB8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        (0, "2001:db8::1", None, "2001:db8::/64"),
        (0, "::ffff:192.0.2.1", None, "192.0.2.1"),
        (0, "", None, ""),
    ],
)
def test_the_client_address(settings, proxies, remote_addr, forwarded_for, client):
    settings.TRUSTED_PROXIES = proxies
    headers = {"REMOTE_ADDR": remote_addr}
    if forwarded_for is not None:
        headers["HTTP_X_FORWARDED_FOR"] = forwarded_for

    assert client_address(RequestFactory().post("/api/login/", **headers)) == client


def test_an_ipv6_client_counts_by_its_64_block(api, alice, settings):
    settings.LOGIN_THROTTLE_RATE = "2/min"

    same_block = [login(api, WRONG, REMOTE_ADDR=f"2001:db8::{i:x}") for i in (1, 2, 0xFFFF)]
    another_block = login(api, WRONG, REMOTE_ADDR="2001:db8:0:1::1")

    assert same_block == [400, 400, 429]
    assert another_block == 400


def test_the_key_has_a_fixed_length_and_holds_no_address(api, alice):
    login(api, WRONG)

    key = ThrottleCounter.objects.get().key
    assert len(key) == KEY_LENGTH
    assert key.startswith("login:")
    assert "127.0.0.1" not in key


@pytest.mark.django_db(transaction=True)
def test_concurrent_logins_let_exactly_the_limit_through(settings):
    settings.LOGIN_THROTTLE_RATE = "10/min"
    alice = make_user("alice")

    statuses = run_concurrently(lambda _: login(APIClient(), RIGHT), 40)

    assert Counter(statuses) == {200: 10, 429: 30}
    assert AuthToken.objects.filter(user=alice).count() == 10
    assert ThrottleCounter.objects.get().count == 40


def test_a_new_window_starts_the_count_again_and_purges_ended_windows(api, alice, settings, clock):
    settings.LOGIN_THROTTLE_RATE = "2/min"
    start = clock.now

    assert [login(api, WRONG) for _ in range(3)] == [400, 400, 429]
    assert login(api, WRONG, REMOTE_ADDR="192.0.2.9") == 400
    clock.now = start + 45
    response = api.post("/api/login/", RIGHT, format="json")
    assert response.status_code == 429
    assert response["Retry-After"] == "15"
    assert response.json()["code"] == "throttled"

    clock.now = start + 60
    assert login(api, RIGHT) == 200

    # The other client's row was of the window that ended: deleted when this one started anew.
    counter = ThrottleCounter.objects.get()
    assert counter.key == throttle_key(scope="login", address="127.0.0.1")
    assert counter.count == 1
    assert counter.window_start == datetime.fromtimestamp(start + 60, tz=UTC)


def test_a_server_whose_clock_lags_counts_into_the_newer_window(api, alice, settings, clock):
    settings.LOGIN_THROTTLE_RATE = "2/min"
    start = clock.now

    assert login(api, WRONG) == 400
    clock.now = start - 1  # another server, a second behind, still in the window before
    assert [login(api, WRONG) for _ in range(2)] == [400, 429]
    assert ThrottleCounter.objects.get().window_start == datetime.fromtimestamp(start, tz=UTC)


def test_the_admin_login_form_is_throttled(operator, settings):
    settings.LOGIN_THROTTLE_RATE = "3/min"
    client = Client()

    statuses = [admin_login(client, "wrong") for _ in range(3)]
    refused = client.post("/admin/login/", {"username": "root", "password": PASSWORD})

    assert statuses == [200, 200, 200]  # the form again, with its error
    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled"
    assert int(refused["Retry-After"]) > 0
    assert "_auth_user_id" not in client.session


def test_the_admin_login_page_itself_is_not_counted(operator, settings):
    settings.LOGIN_THROTTLE_RATE = "3/min"
    client = Client()

    assert {client.get("/admin/login/").status_code for _ in range(10)} == {200}
    assert admin_login(client, PASSWORD) == 302
    assert ThrottleCounter.objects.get().count == 1


def test_the_admin_and_the_api_share_one_bucket(api, alice, operator, settings):
    settings.LOGIN_THROTTLE_RATE = "4/min"
    admin = Client()

    assert [
        login(api, WRONG),
        admin_login(admin, "wrong"),
        login(api, WRONG),
        admin_login(admin, "wrong"),
    ] == [
        400,
        200,
        400,
        200,
    ]
    assert login(api, RIGHT) == 429
    assert admin_login(admin, PASSWORD) == 429
    assert api.post("/api/register/", {"username": "x", "password": "y"}).status_code == 429


@pytest.mark.parametrize(
    ("url", "payload"),
    [
        ("/api/login/", RIGHT),
        ("/api/register/", {"username": "carol", "password": "a-long-and-unusual-pass"}),
    ],
)
def test_a_counter_that_cannot_be_written_refuses_the_request(api, alice, monkeypatch, caplog, url, payload):
    def broken(**kwargs):
        raise DatabaseError("the counter table is unavailable")

    monkeypatch.setattr("users.throttling.throttle_count", broken)

    response = api.post(url, payload, format="json")

    assert response.status_code == 503
    assert response.json() == {
        "detail": "Logging in is unavailable for a moment; retry later.",
        "code": "throttle_unavailable",
    }
    assert not AuthToken.objects.exists()
    assert [r.levelno for r in caplog.records if r.name == "users.throttling"] == [logging.ERROR]


def test_a_counter_that_cannot_be_written_refuses_the_admin_login(operator, monkeypatch):
    def broken(**kwargs):
        raise DatabaseError("the counter table is unavailable")

    monkeypatch.setattr("users.throttling.throttle_count", broken)
    client = Client()

    response = client.post("/admin/login/", {"username": "root", "password": PASSWORD})

    assert response.status_code == 503
    assert response.json()["code"] == "throttle_unavailable"
    assert "_auth_user_id" not in client.session


def test_a_failed_count_leaves_the_surrounding_transaction_usable(api, alice, monkeypatch):
    # A real database error: the statement names a table that does not exist. The test runs in a
    # transaction; on PostgreSQL a failed statement outside a savepoint would abort all of it.
    with monkeypatch.context() as patch:
        patch.setattr(ThrottleCounter._meta, "db_table", "users_no_such_table")
        assert login(api, RIGHT) == 503

    assert not AuthToken.objects.exists()
    assert login(api, RIGHT) == 200
    assert ThrottleCounter.objects.get().count == 1
