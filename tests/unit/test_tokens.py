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


def _signed(key, *, lives: int | None = None, issued_in: int | None = None, **payload) -> str:
    """A token signed now; ``lives`` and ``issued_in`` are seconds from now (parameters are collected long before a test runs)."""
    import jwt

    now = int(time.time())
    relative = ({"exp": now + lives} if lives is not None else {}) | ({"iat": now + issued_in} if issued_in is not None else {})
    claims = {"iss": "rrs-131016", "sub": "rrs-131016", "aud": "cs-131016", "iat": now, "exp": now + 60, "jti": "j-1"} | relative | payload
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm="EdDSA")


@pytest.mark.parametrize(("label", "payload", "why"), [
    ("a day long", {"lives": 24 * 3600}, "lifetime"),
    ("eleven minutes long", {"lives": 660}, "lifetime"),
    ("two audiences", {"aud": ["cs-131016", "national"]}, "audience"),
    ("no token id", {"jti": None}, "jti"),
    ("an empty token id", {"jti": ""}, "jti"),
    ("issued in the future", {"issued_in": 600, "lives": 660}, "iat|future"),
])
def test_a_token_that_lives_long_names_two_audiences_or_has_no_id_is_refused_with_its_claimed_issuer(parties, label, payload, why):
    keys, ring = parties
    with pytest.raises(TokenRefused, match=why) as refused:
        ring.verify(_signed(keys["rrs-131016"], **payload), audience="cs-131016")
    assert refused.value.claimed_issuer == "rrs-131016", label


def test_a_ten_minute_token_is_taken_and_a_longer_kind_only_where_its_receiver_names_it(parties):
    keys, ring = parties
    assert ring.verify(_signed(keys["rrs-131016"], exp=int(time.time()) + tokens.MAX_TOKEN_LIFETIME_SECONDS), audience="cs-131016").issuer == "rrs-131016"
    credential = _signed(keys["rrs-131016"], aud="provision-log", sub="12345678903", scope=tokens.RESIDENT_CREDENTIAL_SCOPE, exp=int(time.time()) + 24 * 3600)
    with pytest.raises(TokenRefused, match="lifetime"):
        ring.verify(credential, audience="provision-log")  # a receiver that does not take resident credentials
    longer = {tokens.RESIDENT_CREDENTIAL_SCOPE: tokens.RESIDENT_CREDENTIAL_MAX_SECONDS}
    assert ring.verify(credential, audience="provision-log", longer_lived=longer).subject == "12345678903"
    with pytest.raises(TokenRefused, match="lifetime"):
        ring.verify(credential, audience="provision-log")  # remembered, but its lifetime is checked for each receiver
    too_long = _signed(keys["rrs-131016"], aud="provision-log", scope=tokens.RESIDENT_CREDENTIAL_SCOPE, exp=int(time.time()) + 2 * 24 * 3600)
    with pytest.raises(TokenRefused, match="lifetime"):
        ring.verify(too_long, audience="provision-log", longer_lived=longer)
    plain_but_long = _signed(keys["rrs-131016"], aud="provision-log", exp=int(time.time()) + 3600)
    with pytest.raises(TokenRefused, match="lifetime"):
        ring.verify(plain_but_long, audience="provision-log", longer_lived=longer)  # only the named kind lives longer


def test_a_plain_token_is_never_signed_for_longer_than_a_receiver_takes(parties):
    keys, _ = parties
    with pytest.raises(ValueError):
        sign_token(keys["rrs-131016"], issuer="rrs-131016", audience="national", lifetime_seconds=3600)
    sign_token(keys["rrs-131016"], issuer="rrs-131016", audience="national", lifetime_seconds=tokens.MAX_TOKEN_LIFETIME_SECONDS)


def test_an_unknown_or_control_character_issuer_is_refused_and_named_as_claimed(parties):
    keys, ring = parties
    with pytest.raises(TokenRefused) as refused:
        ring.verify(_signed(keys["intruder"], iss="agency-\x00x"), audience="cs-131016")
    assert refused.value.claimed_issuer == "agency-\x00x"
    from services.common.auth import unverified_caller

    assert unverified_caller(refused.value.claimed_issuer) == "unverified:agency-\\x00x"


def test_a_long_running_client_gets_a_fresh_token_before_its_own_ends(monkeypatch):
    minted = []
    auth = tokens.RefreshingToken(lambda: minted.append(1) or f"t{len(minted)}", refresh_seconds=100)
    clock = [1000.0]
    monkeypatch.setattr(tokens.time, "monotonic", lambda: clock[0])
    assert auth.token() == "t1" and auth.token() == "t1"
    clock[0] += 101
    assert auth.token() == "t2"
