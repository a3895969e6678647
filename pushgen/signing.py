"""The shop's secret and what it signs: unsubscribe tokens that cannot be forged.

Each database has its own secret, created on first use with ``secrets`` and kept *outside*
the database and every export: in ``$PUSHGEN_SECRET`` when set, else in a file beside the
database (``shop.db`` -> ``shop.db.secret``, mode 0600). Whoever holds the database file
but not the secret cannot make a valid unsubscribe link, and a link from one shop is
worthless for another.

An unsubscribe token is ``<campaign id>-<user id>-<HMAC-SHA256>``: the full 64-hex-digit
MAC covers both ids and the campaign's name and the customer's external id, so a token
names exactly one (campaign, customer) and a customer id reused after an erasure does not
inherit old links. ``verify_unsubscribe`` reads a token (or a whole URL) back.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets as _secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from sqlite_utils import Database

from .errors import PushgenError
from .messages import CampaignSettings

SECRET_ENV = "PUSHGEN_SECRET"
MIN_SECRET_CHARS = 32
_TOKEN_RE = re.compile(r"(\d{1,18})-(\d{1,18})-([0-9a-f]{64})")
_cache: dict[str, bytes] = {}


def secret_path(db: Database) -> Path | None:
    """``<database file>.secret``, or None for an in-memory database."""
    row = db.execute("PRAGMA database_list").fetchone()
    name = row[2] if row else ""
    return Path(name + ".secret") if name else None


def shop_secret(db: Database) -> bytes:
    """The secret of this database: ``$PUSHGEN_SECRET``, else its ``.secret`` file
    (created with 32 random bytes, mode 0600, on first use)."""
    env = os.environ.get(SECRET_ENV)
    if env is not None:
        if len(env.strip()) < MIN_SECRET_CHARS:
            raise PushgenError(f"{SECRET_ENV} is too short: use at least {MIN_SECRET_CHARS} "
                               "random characters, e.g. the output of "
                               "`python -c \"import secrets; print(secrets.token_hex(32))\"`")
        return env.strip().encode()
    path = secret_path(db)
    if path is None:
        raise PushgenError(f"an in-memory database has no secret file: set {SECRET_ENV}")
    key = str(path.resolve())
    if key in _cache:
        return _cache[key]
    if not path.exists() and _signed_with_a_secret(db):
        raise PushgenError(
            f"{path}: the shop secret is missing, but this database already holds drafts or "
            "erasures made with it (the unsubscribe links sent, the erased customers' ids): "
            f"restore {path.name} from a backup, or set {SECRET_ENV}. If it is lost for good, "
            "write a new one (`python -c \"import secrets; print(secrets.token_hex(32))\" > "
            f"{path.name}`): links already sent will then be refused as forged")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise PushgenError(f"{path}: cannot create the shop secret ({exc.strerror or exc}); "
                           f"set {SECRET_ENV} instead") from None
    else:
        with os.fdopen(fd, "w") as fh:
            fh.write(_secrets.token_hex(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    try:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)   # never readable by other local users
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise PushgenError(f"{path}: cannot read the shop secret ({exc})") from None
    if len(text) < MIN_SECRET_CHARS:
        raise PushgenError(f"{path}: the shop secret is empty or too short; restore it from "
                           f"a backup (unsubscribe links already sent depend on it)")
    _cache[key] = text.encode()
    return _cache[key]


def _signed_with_a_secret(db: Database) -> bool:
    """Whether anything in the database was made with the shop secret: a draft (its
    unsubscribe link) or an erasure (the keyed hash of the id)."""
    for table in ("drafts", "erasures"):
        try:
            if db.execute(f"SELECT 1 FROM [{table}] LIMIT 1").fetchone():
                return True
        except sqlite3.OperationalError:   # a database from before that table
            continue
    return False


def _mac(secret: bytes, campaign_id: int, campaign: str, user_id: int, external_id: str
         ) -> str:
    msg = "\x1f".join(("unsubscribe", str(campaign_id), campaign, str(user_id), external_id))
    return hmac.new(secret, msg.encode("utf-8"), hashlib.sha256).hexdigest()


def unsubscribe_token(secret: bytes, *, campaign_id: int, campaign: str, user_id: int,
                      external_id: str) -> str:
    """The token of one (campaign, customer): ``<campaign id>-<user id>-<mac>``."""
    return f"{int(campaign_id)}-{int(user_id)}-" \
           f"{_mac(secret, campaign_id, campaign, user_id, external_id)}"


def unsubscribe_url(settings: CampaignSettings, token: str) -> str:
    """The campaign's ``unsubscribe_url`` with ``{token}`` filled in."""
    return settings.unsubscribe_url.replace("{token}", token)


def recipient_unsubscribe_url(secret: bytes, settings: CampaignSettings, campaign_id: int,
                              user_id: int, external_id: str) -> str:
    """The signed unsubscribe link of one customer in one campaign."""
    return unsubscribe_url(settings, unsubscribe_token(
        secret, campaign_id=campaign_id, campaign=settings.name, user_id=user_id,
        external_id=external_id))


@dataclass
class UnsubscribeToken:
    """Whose a verified token is."""

    token: str
    campaign_id: int
    campaign: str
    user_id: int
    external_id: str


def find_token(text: str) -> str | None:
    """The token inside a token, an unsubscribe URL (any query parameter or path part)."""
    text = text.strip()
    candidates = [text]
    parts = urlsplit(text)
    if parts.scheme or parts.query:
        candidates += [v for _, v in parse_qsl(parts.query)] + parts.path.split("/")
    for c in candidates:
        if _TOKEN_RE.fullmatch(c):
            return c
    m = _TOKEN_RE.search(text)
    return m.group(0) if m else None


def verify_unsubscribe(db: Database, token_or_url: str) -> UnsubscribeToken:
    """The (campaign, customer) a token was made for; PushgenError when it is malformed,
    forged (made without this shop's secret) or names a customer or campaign that is gone."""
    from .store.drafts import token_owner

    token = find_token(token_or_url)
    if token is None:
        raise PushgenError("no unsubscribe token found (expected <campaign>-<user>-<64 hex "
                           "digits>, alone or inside the unsubscribe URL)")
    cid, uid, mac = _TOKEN_RE.fullmatch(token).groups()  # type: ignore[union-attr]
    owner = token_owner(db, int(cid), int(uid))
    secret = shop_secret(db)
    if owner is None:
        raise PushgenError(f"token {token[:24]}...: forged or stale (no such campaign and "
                           "customer in this database)")
    campaign, external_id = owner
    expected = _mac(secret, int(cid), campaign, int(uid), external_id)
    if not hmac.compare_digest(expected, mac):
        raise PushgenError(f"token {token[:24]}...: forged (its signature does not match "
                           "this shop's secret)")
    return UnsubscribeToken(token, int(cid), campaign, int(uid), external_id)


__all__ = ["SECRET_ENV", "secret_path", "shop_secret", "unsubscribe_token", "unsubscribe_url",
           "recipient_unsubscribe_url",
           "UnsubscribeToken", "find_token", "verify_unsubscribe"]
