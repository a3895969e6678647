"""Fixture data for review, export and web tests: a small shop with realistic drafts.

Drafts are inserted with sqlite-utils as the campaign code would write them: content is
hand-written but valid copy (so exact assertions stay stable whatever the bundled templates
say), and the stored checks come from the real rules (``guards.check_draft``), so a helper
draft passes or fails exactly as a generated one would.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from pushgen.messages import (CampaignSettings, ItemFacts, Message, MessageContext, Recipient,
                              checks_pass)
from pushgen.signing import recipient_unsubscribe_url, shop_secret
from pushgen.store import dumps, now_iso, open_store

USERS = [
    # id, external_id, name, email, phone, locale, attributes
    (1, "u-ana", "Ana Lima", "ana@example.com", "+15550000001", "en-US",
     {"age_band": "25-34", "gender": "f", "region": "west", "tier": "gold"}),
    (2, "u-wang", "王芳", "wangfang@example.cn", "+8613800138000", "zh-CN",
     {"age_band": "35-44", "gender": "f", "region": "east", "tier": "silver"}),
    (3, "u-bob", "Bob Stone", "bob@example.com", "+15550000003", "en-US",
     {"age_band": "45-54", "gender": "m", "region": "north", "tier": "bronze"}),
]

ITEMS = [
    ItemFacts(sku="SKU-1", title="Linen Shirt", price=49.0, sale_price=34.0, category="tops",
              brand="Acme", url="https://shop.example/p/SKU-1", score=0.91,
              reason="bought similar shirts", attributes={"title_zh": "亚麻衬衫"}),
    ItemFacts(sku="SKU-2", title="Canvas Tote", price=25.0, category="bags", brand="Acme",
              url="https://shop.example/p/SKU-2", score=0.74, reason="popular in your region",
              attributes={"title_zh": "帆布托特包"}),
]


CATALOG_TITLES = {i.sku: [i.title, i.attributes["title_zh"]] for i in ITEMS}


ADDRESS = "7 Harbour Road, Portsmouth, PO1 2AB, UK"


def settings(name: str, channel: str) -> CampaignSettings:
    """The shop's own sender (not pushgen's demo one, which export refuses)."""
    return CampaignSettings(name=name, channel=channel, sender_name="Acme Shop",
                            sender_email="news@acme.example", postal_address=ADDRESS,
                            unsubscribe_url="https://acme.example/unsubscribe?t={token}")


def unsub_url(db: Database, campaign: str, user: tuple) -> str:
    """The signed unsubscribe link of ``user`` (a USERS row) in ``campaign``."""
    cid = db.execute("SELECT id FROM campaigns WHERE name = ?", [campaign]).fetchone()[0]
    return recipient_unsubscribe_url(shop_secret(db), settings(campaign, "email"), cid,
                                     user[0], user[1])


def content_for(channel: str, user: tuple, campaign: str, unsub: str = "") -> dict[str, str]:
    """Valid copy for ``user`` (a USERS row) on ``channel`` (email: with link ``unsub``)."""
    _, ext, name, _, _, locale, _ = user
    zh = locale.startswith("zh")
    first = name if zh else name.split()[0]
    if channel == "sms":
        if zh:
            return {"text": f"{first}，亚麻衬衫现价¥34.00，立省30%：https://shop.example/p/SKU-1\n回复TD退订"}
        return {"text": f"Hi {first}, the Linen Shirt is now $34.00 (30% off): "
                        "https://shop.example/p/SKU-1\nReply STOP to opt out"}
    if channel == "push":
        if zh:
            return {"title": f"{first}，亚麻衬衫立省30%", "body": "亚麻衬衫现价¥34.00，点击查看。",
                    "deep_link": "shop://item/SKU-1"}
        return {"title": f"{first}, 30% off the Linen Shirt",
                "body": "The Linen Shirt is now $34.00. Tap to see it.",
                "deep_link": "shop://item/SKU-1"}
    address = ADDRESS
    if zh:
        subject = f"{first}，春季精选为您准备好了"
        preheader = "亚麻衬衫现价¥34.00，立省30%，帆布托特包¥25.00，为您精心挑选的春季好物，快来看看吧。"
        intro = "亚麻衬衫现价¥34.00，立省30%。"
    else:
        subject = f"{first}, your spring picks are here"
        preheader = "The Linen Shirt is now $34.00 (30% off), plus a Canvas Tote for $25.00."
        intro = "The Linen Shirt is now $34.00 (30% off)."
    html = (f'<html><body><p style="font-family: Georgia, serif">{intro}</p>\n'
            f'<p><a href="https://shop.example/p/SKU-1">Linen Shirt, "new" &amp; light</a></p>\n'
            f'<p><a href="{unsub}">Unsubscribe</a> · {address}</p></body></html>')
    text = f"{intro}\nhttps://shop.example/p/SKU-1\n\nUnsubscribe: {unsub}\n{address}"
    return {"subject": subject, "preheader": preheader, "html": html, "text": text}


def run_checks(db: Database, channel: str, content: dict[str, str], user: tuple,
               campaign: str) -> list[dict[str, Any]]:
    """The stored checks of a draft, from the real rules."""
    uid, ext, name, email, phone, locale, attrs = user
    ctx = MessageContext(recipient=Recipient(uid, ext, name, locale, attrs),
                         items=ITEMS, settings=settings(campaign, channel),
                         unsubscribe_url=unsub_url(db, campaign, user))
    message = Message(channel, dict(content))
    from pushgen.generate.guards import check_draft

    return [c.to_dict() for c in check_draft(message, ctx, catalog_titles=CATALOG_TITLES,
                                             forbidden_values=[email, phone])]


def make_shop(path: Path | str, *, campaigns: dict[str, str] | None = None,
              failing: dict[str, list[int]] | None = None) -> Database:
    """A database with the three USERS, the ITEMS and one draft per user per campaign.

    ``campaigns`` maps name -> channel (default: spring=sms, news=email, app=push).
    ``failing`` lists user ids whose draft in a campaign is made to fail (missing opt-out
    line for SMS, empty subject for email, empty title for push).
    """
    db = open_store(path)
    now = now_iso()
    db["users"].insert_all([
        {"id": u[0], "external_id": u[1], "name": u[2], "email": u[3], "phone": u[4],
         "locale": u[5], "consent_email": 1, "consent_sms": 1, "consent_push": 1,
         "attributes": dumps(u[6]), "created_at": now, "updated_at": now} for u in USERS])
    db["items"].insert_all([
        {"sku": i.sku, "title": i.title, "price": i.price, "sale_price": i.sale_price,
         "category": i.category, "brand": i.brand, "url": i.url, "currency": i.currency,
         "attributes": dumps(i.attributes), "created_at": now, "updated_at": now}
        for i in ITEMS])
    campaigns = campaigns or {"spring": "sms", "news": "email", "app": "push"}
    failing = failing or {}
    for name, channel in campaigns.items():
        config = dataclasses.asdict(settings(name, channel))
        config["audience"] = {"locales": []}  # extra keys as the campaign code writes them
        cid = db["campaigns"].insert({"name": name, "channel": channel, "config": dumps(config),
                                      "created_at": now, "updated_at": now}).last_pk
        for user in USERS:
            content = content_for(channel, user, name, unsub_url(db, name, user))
            if user[0] in failing.get(name, []):
                content = _break(channel, content)
            checks = run_checks(db, channel, content, user, name)
            passed = checks_pass([_cr(c) for c in checks])
            db["drafts"].insert({
                "campaign_id": cid, "user_id": user[0], "channel": channel, "variant": 1,
                "locale": user[5], "content": dumps(content),
                "items": dumps([i.to_dict() for i in ITEMS]), "generator": "template",
                "template_name": f"{channel}/default.{user[5]}@abc123def456",
                "tokens_prompt": 0, "tokens_completion": 0, "checks": dumps(checks),
                "passed": int(passed), "flag": None if passed else "failed checks",
                "status": "draft", "version": 1, "created_at": now, "updated_at": now})
    return db


def _cr(d: dict[str, Any]):
    from pushgen.messages import CheckResult

    return CheckResult(**d)


def _break(channel: str, content: dict[str, str]) -> dict[str, str]:
    if channel == "sms":
        return {"text": content["text"].split("\n")[0]}
    if channel == "push":
        return {**content, "title": ""}
    return {**content, "subject": ""}


def draft_id(db: Database, campaign: str, user_id: int) -> int:
    return db.execute("SELECT d.id FROM drafts d JOIN campaigns c ON c.id = d.campaign_id "
                      "WHERE c.name = ? AND d.user_id = ?", [campaign, user_id]).fetchone()[0]


def draft_row(db: Database, draft_id: int) -> dict[str, Any]:
    row = dict(db["drafts"].get(draft_id))
    for key in ("content", "checks", "items"):
        row[key] = json.loads(row[key])
    return row


def events(db: Database, draft_id: int) -> list[dict[str, Any]]:
    rows = list(db.query("SELECT * FROM review_events WHERE draft_id = ? ORDER BY id",
                         [draft_id]))
    for r in rows:
        for key in ("before", "after"):
            r[key] = json.loads(r[key]) if r[key] else None
    return rows
