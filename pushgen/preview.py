"""Preview a template for one real customer: fresh recommendations, rendered and checked.

Nothing is written: the customer is ranked in memory with the campaign's rules, so a preview
never creates a campaign or touches stored recommendations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlite_utils import Database

from .config import CampaignConfig
from .errors import PushgenError
from .messages import CheckResult, Message, MessageContext
from .signing import recipient_unsubscribe_url, shop_secret
from .store import drafts as store


def preview_message(db: Database, name: str, config: CampaignConfig, user_external_id: str,
                    *, template_dirs: Sequence[Any] | None = None
                    ) -> tuple[Message, list[CheckResult], MessageContext]:
    """Render ``config.settings.template`` for one customer, checked by the same rules as a
    draft. ``name`` is the campaign whose unsubscribe link is shown (campaign id 0 when it
    does not exist yet)."""
    from .generate.guards import store_guard
    from .generate.templates import render
    from .ranking import load_ranker, recommend

    uid = store.user_id(db, user_external_id)
    if uid is None:
        raise PushgenError(f"no user with external id {user_external_id!r}")
    rules, k = config.rank_rules()
    items = recommend(load_ranker(db), [uid], k, rules).get(uid, [])
    if not items:
        raise PushgenError(f"user {user_external_id!r} has no eligible item to recommend")
    person = store.recipients(db, [uid])[uid]
    existing = store.get_campaign(db, name)
    ctx = MessageContext(
        recipient=person, items=items[:config.settings.items_per_message],
        settings=config.settings, unsubscribe_url=recipient_unsubscribe_url(
            shop_secret(db), config.settings, existing["id"] if existing else 0, uid,
            person.external_id))
    rendered = render(ctx, template=config.settings.template, template_dirs=template_dirs)
    checks = store_guard(db).check(rendered.message, ctx, forbidden_values=store.contact_values(
        db, [uid]).get(uid, []))
    return rendered.message, checks, ctx


__all__ = ["preview_message"]
