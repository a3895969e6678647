"""Signed unsubscribe links for tests that build message contexts without a database."""

from __future__ import annotations

from pushgen.messages import CampaignSettings
from pushgen.signing import recipient_unsubscribe_url

TEST_SECRET = b"test-secret-" + b"0" * 32


def unsub_for(settings: CampaignSettings, user_id: int, external_id: str,
              campaign_id: int = 1) -> str:
    """The link a campaign run would put in this recipient's email."""
    return recipient_unsubscribe_url(TEST_SECRET, settings, campaign_id, user_id, external_id)


# A shop's own sender (pushgen's demo sender draws a campaign.sender warning and export
# refuses it): tests that expect every check to pass build their settings with it.
OWN_SENDER = {"sender_name": "Trail Co Outdoors", "sender_email": "news@trail.example",
              "postal_address": "9 Harbour Road, Portsmouth, PO1 2AB, UK",
              "unsubscribe_url": "https://shop.example/u?t={token}"}
