"""Campaign TOML: every key maps to a setting, and mistakes name the file and key."""

from pathlib import Path

import pytest

from pushgen.config import load_campaign_config, settings_from_json
from pushgen.errors import InputError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "campaign.toml"


def test_example_config_loads_every_section() -> None:
    cfg = load_campaign_config(EXAMPLE, name="spring")
    s = cfg.settings
    assert (s.name, s.channel, s.items_per_message) == ("spring", "email", 3)
    assert "act now" in s.banned_phrases and s.emoji_policy == "none"
    assert s.unsubscribe_url.endswith("{token}") and s.sms_max_segments == 1
    assert cfg.audience.profile == {"tier": ["gold", "silver"]}
    assert cfg.audience.frequency_cap == 2 and cfg.audience.active_within_days == 30
    assert cfg.rank["exclude_categories"] == ["books"]


def test_channel_option_overrides_file() -> None:
    assert load_campaign_config(EXAMPLE, name="x", channel="sms").settings.channel == "sms"


def test_defaults_without_file() -> None:
    cfg = load_campaign_config(None, name="x")
    assert cfg.settings.channel == "sms" and cfg.rank == {} and cfg.audience.profile == {}


@pytest.mark.parametrize("text, field", [
    ("[voice]\nbanned_phrase = ['x']\n",
     "unknown key 'banned_phrase' in [voice]; did you mean 'banned_phrases'?"),
    ("[limits]\nsms_max_segments = 'two'\n", "limits.sms_max_segments"),
    ("[audience]\nfrequency = 2\n", "unknown key 'frequency' in [audience]; did you mean"),
    ("[rank]\ntopk = 3\n", "unknown key 'topk' in [rank]; did you mean 'top_k'?"),
    ("[colours]\nx = 1\n", "unknown section 'colours'; known: "),
    ("[campaign]\nitems_per_mesage = 3\n",
     "unknown key 'items_per_mesage' in [campaign]; did you mean 'items_per_message'?"),
    ("[campaign]\nchannel = 'fax'\n", "campaign.channel"),
])
def test_mistakes_name_file_and_key(tmp_path: Path, text: str, field: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_campaign_config(p, name="x")
    assert str(p) in str(err.value) and field in str(err.value)


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("[voice\n", encoding="utf-8")
    with pytest.raises(InputError, match="not valid TOML"):
        load_campaign_config(p, name="x")
    with pytest.raises(InputError, match="no such campaign config"):
        load_campaign_config(tmp_path / "nope.toml", name="x")


def test_settings_round_trip_through_json_ignores_extra_keys() -> None:
    import dataclasses
    s = load_campaign_config(EXAMPLE, name="spring").settings
    data = dataclasses.asdict(s) | {"audience": {}, "rank": {}}
    assert settings_from_json(data) == s


def test_rank_keys_match_ranker_rules() -> None:
    import dataclasses
    from pushgen.config import _RANK_KEYS
    from pushgen.ranking import RankRules
    assert _RANK_KEYS == {"top_k"} | {f.name for f in dataclasses.fields(RankRules)}
