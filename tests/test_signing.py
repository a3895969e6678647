"""The shop secret and signed unsubscribe tokens: unforgeable, bound to campaign and customer."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat

import pytest

from pushgen.cli import app
from pushgen.errors import PushgenError
from pushgen.signing import (SECRET_ENV, find_token, secret_path, shop_secret,
                             unsubscribe_token, verify_unsubscribe)
from pushgen.store import open_store

from _review_helpers import USERS, make_shop, unsub_url


def test_secret_is_created_once_outside_the_database_with_mode_0600(tmp_path):
    db = open_store(tmp_path / "a.db")
    secret = shop_secret(db)
    path = secret_path(db)
    assert path == tmp_path / "a.db.secret" and path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(secret) >= 64 and shop_secret(db) == secret
    assert secret not in (tmp_path / "a.db").read_bytes()
    other = open_store(tmp_path / "b.db")
    assert shop_secret(other) != secret      # every shop has its own


def test_a_lost_secret_is_not_silently_replaced_once_links_went_out(tmp_path):
    """Drafts carry links signed with the secret: a new one would make every opt-out link
    already sent look forged, so a missing file is an error, not a fresh secret."""
    import shutil

    db = make_shop(tmp_path / "a.db", campaigns={"news": "email"})
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(tmp_path / "a.db", tmp_path / "copy.db")        # the .secret left behind
    copy = open_store(tmp_path / "copy.db")
    with pytest.raises(PushgenError, match="restore copy.db.secret from a backup"):
        shop_secret(copy)
    assert not (tmp_path / "copy.db.secret").exists()


def test_env_secret_wins_and_must_be_long(tmp_path, monkeypatch):
    db = open_store(tmp_path / "a.db")
    monkeypatch.setenv(SECRET_ENV, "k" * 40)
    assert shop_secret(db) == b"k" * 40
    assert not secret_path(db).exists()
    monkeypatch.setenv(SECRET_ENV, "short")
    with pytest.raises(PushgenError, match="too short"):
        shop_secret(db)


def test_token_is_full_length_and_bound_to_campaign_and_customer():
    s = b"s" * 64
    t = unsubscribe_token(s, campaign_id=3, campaign="spring", user_id=17, external_id="U17")
    cid, uid, mac = t.split("-")
    assert (cid, uid, len(mac)) == ("3", "17", 64)
    assert t != unsubscribe_token(s, campaign_id=3, campaign="spring", user_id=17,
                                  external_id="U18")
    assert t != unsubscribe_token(s, campaign_id=3, campaign="summer", user_id=17,
                                  external_id="U17")
    assert t != unsubscribe_token(b"t" * 64, campaign_id=3, campaign="spring", user_id=17,
                                  external_id="U17")


def test_verify_names_the_owner_and_refuses_forgeries(tmp_path):
    db = make_shop(tmp_path / "shop.db")
    url = unsub_url(db, "news", USERS[1])
    found = verify_unsubscribe(db, url)
    assert (found.campaign, found.external_id, found.user_id) == ("news", "u-wang", 2)
    token = find_token(url)
    assert verify_unsubscribe(db, token).external_id == "u-wang"
    # The old scheme's key was the public string "pushgen": such a token proves nothing.
    cid, uid, _ = token.split("-")
    guessed = hmac.new(b"pushgen", "news\x1fu-wang".encode(), hashlib.sha256).hexdigest()
    with pytest.raises(PushgenError, match="forged"):
        verify_unsubscribe(db, f"{cid}-{uid}-{guessed}")
    # Someone else's ids with a valid-looking MAC: forged too.
    with pytest.raises(PushgenError, match="forged"):
        verify_unsubscribe(db, f"{cid}-1-{token.split('-')[2]}")
    with pytest.raises(PushgenError, match="no such campaign"):
        verify_unsubscribe(db, f"999-{uid}-{token.split('-')[2]}")
    with pytest.raises(PushgenError, match="no unsubscribe token"):
        verify_unsubscribe(db, "https://shop.example/unsubscribe?t=abc")
    # Another shop's secret cannot make links for this one.
    os.replace(tmp_path / "shop.db.secret", tmp_path / "old.secret")
    import pushgen.signing as signing
    signing._cache.clear()
    with pytest.raises(PushgenError, match="forged"):
        verify_unsubscribe(db, url)


def test_cli_verify(tmp_path, runner):
    db = make_shop(tmp_path / "shop.db")
    url = unsub_url(db, "news", USERS[0])
    ok = runner.invoke(app, ["unsubscribe", "verify", url, "--db", str(tmp_path / "shop.db")])
    assert ok.exit_code == 0 and "'news'" in ok.output and "'u-ana'" in ok.output
    bad = runner.invoke(app, ["unsubscribe", "verify", url[:-4] + "0000",
                              "--db", str(tmp_path / "shop.db")])
    assert bad.exit_code == 1 and "forged" in bad.output and "Traceback" not in bad.output


def test_cli_verify_json(tmp_path, runner):
    db = make_shop(tmp_path / "shop.db")
    url = unsub_url(db, "news", USERS[0])
    args = ["unsubscribe", "verify", "--json", "--db", str(tmp_path / "shop.db")]
    ok = runner.invoke(app, args + [url])
    data = json.loads(ok.stdout)
    assert ok.exit_code == 0 and data["valid"] is True
    assert (data["campaign"], data["external_id"]) == ("news", "u-ana")
    bad = runner.invoke(app, args + [url[:-4] + "0000"])
    verdict = json.loads(bad.stdout)
    assert bad.exit_code == 1 and verdict["valid"] is False and "forged" in verdict["reason"]
