"""A customer's profile segment in words ("women aged 25-34"), for grouping results and for
the send-time fallback when a customer has too little history of their own.

A segment names a group, never a person: it is built from the profile's gender and age band
only (the demo's and most shops' broadest profile fields).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_WHO = {"f": "women", "female": "women", "woman": "women", "w": "women",
        "m": "men", "male": "men", "man": "men"}


def profile_segment(attributes: Mapping[str, Any] | None) -> str:
    """``{"gender": "female", "age_band": "25-34"}`` -> ``"women aged 25-34"``; customers
    without either field are ``"shoppers"``."""
    attrs = attributes or {}
    who = _WHO.get(str(attrs.get("gender") or "").strip().lower(), "shoppers")
    age = str(attrs.get("age_band") or "").strip()
    return f"{who} aged {age}" if age else who


__all__ = ["profile_segment"]
