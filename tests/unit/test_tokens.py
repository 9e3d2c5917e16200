"""Signed tokens between parties (services/common/tokens.py): a service reuses its plain tokens for a
while, and a receiver remembers what a signature proved until the token expires — never longer, and
never for another audience or an issuer it does not admit."""

from __future__ import annotations

import time

import pytest

from services.common import tokens
from services.common.tokens import PublicKeyRing, TokenCache, TokenRefused, generate_key_pair, load_private_key, sign_token


@pytest.fixture
def parties(tmp_path):
    public = tmp_path / "public"
    keys = {party: load_private_key(generate_key_pair(tmp_path / "private", public, party)) for party in ("cs-131016", "rrs-131016", "intruder")}
    (public / "intruder.pub").unlink()  # a party the ring does not know
    return keys, PublicKeyRing(public)


def test_a_plain_service_token_is_reused_for_a_fifth_of_its_lifetime(parties, monkeypatch):
    keys, _ = parties
    cache = TokenCache(keys["rrs-131016"], "rrs-131016")
    clock = [1_000_000.0]
    monkeypatch.setattr(tokens.time, "time", lambda: clock[0])
    first = cache.token_for("cs-131016")
    assert cache.token_for("cs-131016") == first
    assert cache.token_for("national") != first, "one token per audience"
    clock[0] += 300 * TokenCache.REUSE_FRACTION - 1
    assert cache.token_for("cs-131016") == first
    clock[0] += 2
    assert cache.token_for("cs-131016") != first, "signed anew once its reuse time is over"


def test_tokens_for_a_person_or_with_claims_are_signed_every_time(parties):
    keys, _ = parties
    cache = TokenCache(keys["rrs-131016"], "rrs-131016")
    assert cache.token_for("provision-log", subject="12345678901") != cache.token_for("provision-log", subject="12345678901")
    assert cache.token_for("cs-131016", claims={"scope": "x"}) != cache.token_for("cs-131016", claims={"scope": "x"})


def test_a_verified_token_is_remembered_only_for_its_audience_its_issuers_and_its_lifetime(parties, monkeypatch):
    keys, ring = parties
    token = sign_token(keys["rrs-131016"], issuer="rrs-131016", audience="cs-131016", lifetime_seconds=60)
    assert ring.verify(token, audience="cs-131016").issuer == "rrs-131016"
    calls = []
    real = ring._verify_signed
    monkeypatch.setattr(ring, "_verify_signed", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert ring.verify(token, audience="cs-131016").issuer == "rrs-131016"
    assert calls == [], "the signature was not checked again"
    with pytest.raises(TokenRefused, match="may not call"):
        ring.verify(token, audience="cs-131016", allowed_issuers=lambda party: party == "national")
    with pytest.raises(TokenRefused):
        ring.verify(token, audience="national")  # another audience: checked, and refused
    assert calls == [1]
    calls.clear()
    later = time.time() + 61
    monkeypatch.setattr(tokens.time, "time", lambda: later)
    ring.verify(token, audience="cs-131016")  # PyJWT reads the real clock, by which the token is still valid
    assert calls == [1], "past its expiry, the signature and the expiry are checked again"


def test_a_refused_token_is_never_remembered(parties):
    keys, ring = parties
    forged = sign_token(keys["intruder"], issuer="rrs-131016", audience="cs-131016")  # the right name, the wrong key
    for _ in range(2):
        with pytest.raises(TokenRefused):
            ring.verify(forged, audience="cs-131016")
