"""Feature matrices: identities, metadata weights, buckets, cold rows, serialisation."""

from __future__ import annotations

import numpy as np
import pytest

from pushgen.ranking.features import FeatureConfig, FeatureSpace, IdIndex, fit_feature_space

USERS = [
    {"id": 1, "locale": "en-US", "attributes": {"age_band": "25-34", "gender": "F", "vip": "y"}},
    {"id": 2, "locale": "en-US", "attributes": {"age_band": "25-34", "gender": "M", "vip": "y"}},
    {"id": 3, "locale": "zh-CN", "attributes": {"age_band": "35-44", "gender": "F"}},
]
ITEMS = [
    {"id": 10, "title": "Trail Runner", "category": "shoes", "brand": "acme", "price": 100.0,
     "sale_price": 80.0, "attributes": {"tags": ["run", "outdoor"]}},
    {"id": 11, "title": "Road Runner", "category": "shoes", "brand": "acme", "price": 50.0,
     "sale_price": None, "attributes": {"tags": ["run"]}},
    {"id": 12, "title": "Face Cream", "category": "skincare", "brand": "glow", "price": 20.0,
     "sale_price": None, "attributes": {"tags": ["outdoor"]}},
    {"id": 13, "title": "Night Cream", "category": "skincare", "brand": "glow", "price": 30.0,
     "sale_price": None, "attributes": {"tags": []}},
]


def space(**cfg) -> FeatureSpace:
    return fit_feature_space(USERS, ITEMS, [1, 2], [10, 11, 12],
                             FeatureConfig(min_count=1, **cfg))


def test_known_rows_have_identity_one_and_small_metadata():
    s = space(meta_weight=0.5)
    m = s.user_matrix(USERS[:1]).toarray()[0]
    assert m[0] == 1.0 and m[1] == 0.0                        # own identity only
    meta = m[len(s.user_ids):]
    names = [s.user_vocab[i] for i in np.flatnonzero(meta)]
    assert sorted(names) == ["age_band=25-34", "gender=f", "locale=en-us"]
    assert meta.sum() == pytest.approx(0.5)                   # total metadata weight


def test_cold_rows_have_metadata_only():
    s = space(cold_meta_weight=0.3)
    m = s.user_matrix(USERS[2:]).toarray()[0]
    assert not m[:len(s.user_ids)].any()
    assert m.sum() == pytest.approx(0.3)
    empty = s.user_matrix([{"id": 9, "locale": "fr-FR", "attributes": {}}])
    assert empty.nnz == 0                                      # nothing known: segment fallback


def test_extra_user_field_and_item_features():
    s = space(user_fields=("gender", "vip"))
    assert "vip=y" in s.user_vocab and not any(v.startswith("age_band") for v in s.user_vocab)
    assert {"category=shoes", "brand=glow", "tags=run", "tags=outdoor"} <= set(s.item_vocab)
    prices = [v for v in s.item_vocab if v.startswith("price#")]
    assert len(prices) >= 2                                    # bucketed, not one per value


def test_price_bucket_uses_current_price_and_quantiles():
    s = space(numeric_buckets=2)
    edges = s.numeric_edges["item:price"]
    assert len(edges) == 1 and 30 <= edges[0] <= 80           # median of 80, 50, 20, 30
    t_sale = [t for t in s.item_tokens(ITEMS[0]) if t.startswith("price#")]
    t_cheap = [t for t in s.item_tokens(ITEMS[2]) if t.startswith("price#")]
    assert t_sale == ["price#1"] and t_cheap == ["price#0"]


def test_min_count_drops_rare_values_and_words_need_enough_items():
    s = fit_feature_space(USERS, ITEMS, [1], [10], FeatureConfig(min_count=2, min_token_items=2))
    assert "gender=m" not in s.user_vocab and "gender=f" in s.user_vocab
    assert {"word:runner", "word:cream"} <= set(s.item_vocab)
    assert "word:trail" not in s.item_vocab                    # on one item only
    t = fit_feature_space(USERS, ITEMS, [1], [10], FeatureConfig(min_token_items=3))
    assert not any(v.startswith("word:") for v in t.item_vocab)
    off = fit_feature_space(USERS, ITEMS, [1], [10],
                            FeatureConfig(min_token_items=2, text_tokens=False))
    assert not any(v.startswith("word:") for v in off.item_vocab)


def test_words_of_titles_and_descriptions_any_attribute_and_stop_words():
    items = [{"id": i, "title": f"Silk Glow Serum {i}", "description": "A serum for dry skin"
              if i % 2 else "Daily sunscreen", "category": "skincare", "price": 10.0 + i,
              "attributes": {"colour": "red" if i < 4 else "blue", "volume_ml": 30 + 10 * i,
                             "title_zh": f"丝光精华{i}"}}
             for i in range(8)]
    s = fit_feature_space([], items, [], [], FeatureConfig(min_token_items=3,
                                                           max_token_share=1.0))
    vocab = set(s.item_vocab)
    assert {"word:serum", "word:dry", "word:skin", "word:sunscreen", "word:daily"} <= vocab
    assert {"colour=red", "colour=blue"} <= vocab              # any attribute of the catalog
    assert any(v.startswith("volume_ml#") for v in vocab)     # numbers as bands
    assert not any(v.startswith("title_zh=") for v in vocab)  # one value per item: no feature
    common = fit_feature_space([], items, [], [], FeatureConfig(min_token_items=3))
    assert "word:serum" not in common.item_vocab               # on every item: says nothing


def test_chinese_text_becomes_character_pairs():
    from pushgen.ranking.features import text_words

    assert text_words("无香防晒霜 SPF50") == {"无香", "香防", "防晒", "晒霜", "spf50"}
    assert text_words("Pacefoot 缓震健步鞋") >= {"pacefoot", "缓震", "健步"}


def test_row_normalisation_option():
    s = space(meta_weight=None, normalize_rows=True)
    m = s.user_matrix(USERS[:2])
    assert np.allclose(np.asarray(m.sum(axis=1)).ravel(), 1.0)


def test_to_dict_round_trip():
    s = space()
    again = FeatureSpace.from_dict(s.to_dict())
    assert (again.user_matrix(USERS) != s.user_matrix(USERS)).nnz == 0
    assert (again.item_matrix(ITEMS) != s.item_matrix(ITEMS)).nnz == 0


def test_id_index_gives_positions_of_unsorted_ids_and_minus_one_for_others():
    index = IdIndex([40, 7, 1000, 12])
    assert index.positions([7, 12, 40, 1000, 8, -1, 5000]).tolist() == [1, 3, 0, 2, -1, -1, -1]
    assert index.get(1000) == 2 and index.get(9) is None and index.get(9, 0) == 0
    assert 12 in index and 13 not in index and "12" not in index and len(index) == 4
    assert IdIndex([]).positions([1, 2]).tolist() == [-1, -1]
