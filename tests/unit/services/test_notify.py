"""Webhook notifications, offline: the profile section, payloads, signatures, subscriptions, backoff."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import time
from datetime import datetime

import orjson
import pytest

from mysimbdp.adapters.metastore.notifications import Delivery
from mysimbdp.domain.notifications import NotifyEvent, Webhook
from mysimbdp.domain.profile import parse_profile
from mysimbdp.errors import ProfileError
from mysimbdp.managers.notifier import MAX_BACKOFF_S, retry_delay_s
from mysimbdp.services.notify import build_payload, excerpt, lowest_ratio_threshold, sign, signed_headers, subscribed

SECRET = "s3cret-s3cret-s3cret"


def _hook(**fields: object) -> Webhook:
    return Webhook.model_validate({"url": "https://hooks.example.com/in", "secret": SECRET, **fields})


def _problems(text: str) -> list[str]:
    with pytest.raises(ProfileError) as info:
        parse_profile(text, "p.yaml")
    return info.value.problems


def test_a_webhook_defaults_to_every_event_and_a_five_percent_ratio() -> None:
    """A webhook with only url and secret gets every event and quarantine_ratio_high 0.05."""
    profile = parse_profile(f"notifications: {{webhooks: [{{url: 'http://10.0.0.5:8080/h', secret: {SECRET}}}]}}", "p")
    (hook,) = profile.notifications.webhooks
    assert hook.events == list(NotifyEvent)
    assert hook.quarantine_ratio_high == 0.05
    assert SECRET not in repr(hook), "the secret never shows in a repr"


def test_bad_webhooks_are_refused_naming_field_and_value() -> None:
    """Every problem is reported with its field and the bad value (but never the secret)."""
    problems = _problems(
        """
notifications:
  webhooks:
    - url: ftp://example.com/x
      secret: tooshort
      events: [file_rejected, disk_full]
      quarantine_ratio_high: 1.5
"""
    )
    text = "\n".join(problems)
    assert "notifications.webhooks.0.url" in text and "'ftp://example.com/x'" in text
    assert "notifications.webhooks.0.secret" in text and "tooshort" not in text
    assert "notifications.webhooks.0.events.1" in text and "'disk_full'" in text
    assert "notifications.webhooks.0.quarantine_ratio_high" in text and "1.5" in text


@pytest.mark.parametrize(
    ("hooks", "expected"),
    [
        ([{"url": "https://a/h", "secret": "${HOOK_SECRET_VALUE}"}], "not expanded"),
        ([{"url": "https://a/h", "secret": SECRET}, {"url": "https://a/h", "secret": SECRET}], "each url may appear"),
        ([{"url": "https://a/h", "secret": SECRET, "events": ["run_failed", "run_failed"]}], "each event may appear"),
        ([{"url": "https://a/h", "secret": SECRET, "events": []}], "at least 1 item"),
        ([{"url": "https:///nohost", "secret": SECRET}], "with a host"),
        ([{"url": "https://a/h", "secret": SECRET, "retries": 3}], "unknown field"),
    ],
)
def test_webhook_rules(hooks: list[dict[str, object]], expected: str) -> None:
    """Environment references, repeated urls or events, no events, a host-less url and an
    unknown field are each refused with a message saying so."""
    assert any(expected in p for p in _problems(orjson.dumps({"notifications": {"webhooks": hooks}}).decode()))


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    """The signature is what a receiver computes with its own HMAC code from the headers and the raw body."""
    body = b'{"event":"run_failed"}'
    expected = hmac.new(SECRET.encode(), b"1712345678." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, "1712345678", body) == f"sha256={expected}"
    assert sign("another-secret-value", "1712345678", body) != sign(SECRET, "1712345678", body)
    assert sign(SECRET, "1712345679", body) != sign(SECRET, "1712345678", body), "the timestamp is signed too"


def test_headers_carry_event_delivery_timestamp_and_a_verifiable_signature() -> None:
    """Each attempt's headers name the event and delivery, carry the attempt's time and sign body and time."""
    delivery = Delivery("n1", "acme", "file_rejected", "https://a/h", '{"id":"n1"}')
    now = time.time()
    headers = signed_headers(delivery, SECRET, now)
    assert headers["X-Mysimbdp-Event"] == "file_rejected"
    assert headers["X-Mysimbdp-Delivery"] == "n1"
    assert headers["X-Mysimbdp-Timestamp"] == str(int(now))
    mac = hmac.new(SECRET.encode(), f"{int(now)}.".encode() + b'{"id":"n1"}', hashlib.sha256).hexdigest()
    assert headers["X-Mysimbdp-Signature"] == f"sha256={mac}"


def test_payload_has_id_event_tenant_utc_time_and_the_fields() -> None:
    """The body is JSON with id, event, tenant, an ISO 8601 UTC time and the event's own fields."""
    body = orjson.loads(build_payload("n1", "acme", NotifyEvent.FILE_REJECTED, 0.5, {"file": "a.csv", "reasons": []}))
    assert body == {
        "id": "n1",
        "event": "file_rejected",
        "tenant": "acme",
        "at": "1970-01-01T00:00:00.500Z",
        "file": "a.csv",
        "reasons": [],
    }
    assert datetime.fromisoformat(body["at"]).utcoffset() is not None


def test_event_fields_cannot_overwrite_the_envelope() -> None:
    """A field named like id, event, tenant or at is a programming error, not a silent overwrite."""
    with pytest.raises(ValueError, match="tenant"):
        build_payload("n1", "acme", NotifyEvent.RUN_FAILED, 0.0, {"tenant": "other"})


def test_subscriptions_follow_events_and_ratio_thresholds() -> None:
    """A webhook gets only its events, and a ratio only strictly above its own threshold."""
    only_failures = _hook(events=["run_failed"])
    assert subscribed(only_failures, NotifyEvent.RUN_FAILED, {})
    assert not subscribed(only_failures, NotifyEvent.FILE_REJECTED, {})
    strict = _hook(quarantine_ratio_high=0.2)
    assert not subscribed(strict, NotifyEvent.QUARANTINE_RATIO_EXCEEDED, {"ratio": 0.2})
    assert subscribed(strict, NotifyEvent.QUARANTINE_RATIO_EXCEEDED, {"ratio": 0.21})


def test_lowest_threshold_counts_only_webhooks_that_want_ratio_events() -> None:
    """The monitor's episode threshold is the lowest of the webhooks subscribed to ratio events."""
    text = f"""
notifications:
  webhooks:
    - {{url: "https://a/1", secret: {SECRET}, events: [run_failed], quarantine_ratio_high: 0.01}}
    - {{url: "https://a/2", secret: {SECRET}, quarantine_ratio_high: 0.3}}
"""
    assert lowest_ratio_threshold(parse_profile(text, "p")) == 0.3
    assert lowest_ratio_threshold(parse_profile("{}", "p")) is None


def test_retry_delays_double_and_are_capped() -> None:
    """Backoff doubles from the base (within ±10 %) and never exceeds the cap."""
    delays = [retry_delay_s(n, 1.0) for n in range(1, 8)]
    assert all(later > earlier for earlier, later in itertools.pairwise(delays))
    assert 0.9 <= delays[0] <= 1.1
    assert retry_delay_s(30, 1.0) <= MAX_BACKOFF_S * 1.1


def test_excerpt_keeps_the_end() -> None:
    """A long stderr tail is cut to its last characters (where the error is)."""
    assert excerpt("abc", 10) == "abc"
    assert excerpt("x" * 50 + "Error: boom", 11) == "…Error: boom"
