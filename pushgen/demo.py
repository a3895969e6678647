"""The built-in demo shop: deterministic synthetic users, items and events with real signal.

Events come from hidden tastes: a user's category preference shifts with age band, gender,
locale and region, their tier shifts the price level they buy at, and each user also has
idiosyncratic favourite brands and latent item factors. So a hybrid ranker can learn both
from history and from profile / catalog features. Same seed -> identical data (timestamps
count back from the day the demo was first built, kept in ``meta``, so activity filters and
send times keep working as time passes). Everything goes through ``import_rows``, the same
validation path as files.

Customers live in real timezones (en-US in US zones by region, zh-CN in Asia/Shanghai) and
each has a daily rhythm: their events cluster around a personal local hour (younger
segments later in the evening), so per-customer send times have something to learn.
``simulate_outcomes`` plays a campaign's results from the same hidden tastes.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlite_utils import Database

from .errors import PushgenError
from .ingest import ImportReport, import_rows
from .store import catalog, get_meta, set_meta

# Demo history covers the DEMO_DAYS days before its end (by default: today, 00:00 UTC).
DEMO_DAYS = 90
DEMO_END_KEY = "demo_end"
DEMO_PARAMS_KEY = "demo_params"   # seed and sizes, so the hidden tastes can be rebuilt


def demo_end(now: _dt.datetime | None = None) -> _dt.datetime:
    """Midnight (UTC) that starts ``now``'s day: where a demo built now ends its history."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return now.astimezone(_dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)

AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55+")
AGE_WEIGHTS = (0.18, 0.27, 0.23, 0.17, 0.15)
GENDERS = ("female", "male", "unspecified")
GENDER_WEIGHTS = (0.50, 0.46, 0.04)
REGIONS = ("north", "south", "east", "west")
TIERS = ("bronze", "silver", "gold")
TIER_WEIGHTS = (0.6, 0.3, 0.1)
ZH_SHARE = 0.3
CONSENT_RATES = {"consent_email": 0.85, "consent_sms": 0.82, "consent_push": 0.88}

# category -> (sku prefix, price range USD, brands [(name, price multiplier)],
#              nouns [(en, zh)], adjectives [(en, zh)], tag pool)
CATALOG: dict[str, dict[str, Any]] = {
    "shoes": dict(
        prefix="SH", price=(35, 160),
        brands=[("Stridewell", 1.0), ("Pacefoot", 0.7), ("Arden & Co", 1.6), ("Trailhawk", 1.1)],
        nouns=[("Running Shoes", "跑鞋"), ("Trail Sneakers", "越野跑鞋"), ("Leather Loafers", "皮质乐福鞋"),
               ("Canvas Sneakers", "帆布鞋"), ("Ankle Boots", "短靴"), ("Walking Shoes", "健步鞋")],
        adjectives=[("Lightweight", "轻量"), ("Classic", "经典"), ("Cushioned", "缓震"),
                    ("Waterproof", "防水"), ("Everyday", "日常"), ("Breathable", "透气")],
        tags=["running", "casual", "leather", "waterproof", "lightweight", "everyday"],
        blurb=("Comfortable from the first step.", "从第一步就舒适。")),
    "outerwear": dict(
        prefix="OW", price=(45, 320),
        brands=[("Northline", 1.0), ("Hearth & Pine", 1.5), ("Cityloft", 0.7), ("Glacier Peak", 1.7)],
        nouns=[("Down Jacket", "羽绒服"), ("Rain Shell", "防雨外套"), ("Wool Coat", "羊毛大衣"),
               ("Fleece Jacket", "抓绒外套"), ("Puffer Vest", "棉马甲"), ("Trench Coat", "风衣")],
        adjectives=[("Packable", "便携"), ("Insulated", "保暖"), ("Classic", "经典"),
                    ("Lightweight", "轻薄"), ("Windproof", "防风"), ("Relaxed", "宽松")],
        tags=["winter", "rain", "wool", "packable", "windproof", "layering"],
        blurb=("Keeps the weather out.", "挡风遮雨，温暖有型。")),
    "skincare": dict(
        prefix="SK", price=(12, 95),
        brands=[("Lumiere Lab", 1.6), ("Dewdrop", 0.7), ("Botanica Pure", 1.0), ("Silk & Stone", 1.4)],
        nouns=[("Hydrating Serum", "保湿精华"), ("Gentle Cleanser", "温和洁面乳"), ("Night Cream", "晚霜"),
               ("Sunscreen SPF 50", "防晒霜SPF50"), ("Sheet Mask Set", "面膜套装"), ("Eye Cream", "眼霜")],
        adjectives=[("Daily", "每日"), ("Soothing", "舒缓"), ("Brightening", "亮肤"),
                    ("Rich", "滋润"), ("Fragrance-Free", "无香"), ("Renewing", "焕活")],
        tags=["hydrating", "sensitive-skin", "vegan", "spf", "night", "gift"],
        blurb=("Dermatologist tested.", "经皮肤科测试。")),
    "tea": dict(
        prefix="TE", price=(8, 120),
        brands=[("Jade Mountain", 1.5), ("Leafhouse", 1.0), ("Morning Cup", 0.7), ("West Lake Garden", 1.7)],
        nouns=[("Longjing Green Tea", "龙井绿茶"), ("Oolong Tea", "乌龙茶"), ("Pu-erh Cake", "普洱茶饼"),
               ("Jasmine Tea", "茉莉花茶"), ("Earl Grey", "伯爵红茶"), ("Chamomile Blend", "洋甘菊花草茶")],
        adjectives=[("Spring Harvest", "春季新采"), ("Organic", "有机"), ("Loose-Leaf", "散装"),
                    ("Reserve", "珍藏"), ("Gift Box", "礼盒装"), ("Single-Origin", "单一产区")],
        tags=["green", "oolong", "organic", "gift", "caffeine-free", "loose-leaf"],
        blurb=("Picked and packed at origin.", "产地采摘，原产地包装。")),
    "electronics": dict(
        prefix="EL", price=(20, 350),
        brands=[("Voltix", 0.7), ("Auralis", 1.6), ("Nimbus Tech", 1.0), ("Kestrel", 1.1)],
        nouns=[("Wireless Earbuds", "无线耳机"), ("Bluetooth Speaker", "蓝牙音箱"), ("Smart Watch", "智能手表"),
               ("Power Bank", "充电宝"), ("Noise-Cancelling Headphones", "降噪耳机"),
               ("Fitness Tracker", "运动手环")],
        adjectives=[("Compact", "小巧"), ("Pro", "专业版"), ("Ultra", "旗舰"), ("Mini", "迷你"),
                    ("Long-Battery", "长续航"), ("Water-Resistant", "防水")],
        tags=["wireless", "bluetooth", "fitness", "travel", "audio", "usb-c"],
        blurb=("Two-year warranty.", "两年质保。")),
    "home": dict(
        prefix="HO", price=(15, 220),
        brands=[("Oak & Linen", 1.5), ("Nestwell", 1.0), ("Casa Basics", 0.7), ("Hearthside", 1.1)],
        nouns=[("Linen Bedding Set", "亚麻床品套件"), ("Ceramic Mug Set", "陶瓷马克杯套装"),
               ("Scented Candle", "香薰蜡烛"), ("Throw Blanket", "针织盖毯"), ("Cast-Iron Pan", "铸铁锅"),
               ("Table Lamp", "台灯")],
        adjectives=[("Handmade", "手工"), ("Cozy", "舒适"), ("Minimalist", "简约"), ("Nordic", "北欧风"),
                    ("Stoneware", "粗陶"), ("Vintage", "复古")],
        tags=["bedroom", "kitchen", "gift", "handmade", "cozy", "decor"],
        blurb=("Made to be used every day.", "为日常使用而设计。")),
    "toys": dict(
        prefix="TO", price=(10, 110),
        brands=[("Brightblocks", 1.0), ("Tiny Tinker", 0.7), ("Wonderworks", 1.5), ("Puzzleroo", 1.0)],
        nouns=[("Building Blocks Set", "积木套装"), ("Wooden Puzzle", "木质拼图"), ("Plush Bear", "毛绒熊"),
               ("Remote-Control Car", "遥控车"), ("Science Kit", "科学实验套装"), ("Board Game", "桌游")],
        adjectives=[("Creative", "创意"), ("Classic", "经典"), ("Deluxe", "豪华"), ("Educational", "益智"),
                    ("Family", "家庭"), ("Mini", "迷你")],
        tags=["ages-3+", "ages-8+", "stem", "family", "gift", "outdoor"],
        blurb=("Safety tested for kids.", "通过儿童安全测试。")),
    "books": dict(
        prefix="BO", price=(8, 60),
        brands=[("Paperlane Press", 1.0), ("Riverstone Books", 1.0), ("Inkwell Classics", 0.7),
                ("Atlas House", 1.5)],
        nouns=[("Cookbook", "烹饪书"), ("Mystery Novel", "悬疑小说"), ("Travel Guide", "旅行指南"),
               ("History of Tea", "茶的历史"), ("Gardening Handbook", "园艺手册"), ("Poetry Collection", "诗集")],
        adjectives=[("Illustrated", "插图版"), ("Bestselling", "畅销"), ("Hardcover", "精装"),
                    ("Pocket", "口袋版"), ("Collector's", "典藏版"), ("New", "全新")],
        tags=["fiction", "non-fiction", "cooking", "travel", "hardcover", "gift"],
        blurb=("A good read for a quiet evening.", "适合安静夜晚的好书。")),
}
CATEGORIES: tuple[str, ...] = tuple(CATALOG)

# Hidden taste model: log-affinity per category (order of CATEGORIES).
#                     shoes outer  skin   tea  elec  home  toys books
AGE_TASTE = {
    "18-24": np.array([1.0, 0.2, 0.3, -0.9, 1.1, -0.8, -0.6, 0.1]),
    "25-34": np.array([0.5, 0.3, 0.6, -0.3, 0.6, 0.2, 0.7, -0.1]),
    "35-44": np.array([0.0, 0.4, 0.2, 0.1, 0.1, 0.8, 0.9, 0.0]),
    "45-54": np.array([-0.3, 0.4, 0.0, 0.7, -0.4, 0.7, -0.2, 0.6]),
    "55+": np.array([-0.6, 0.1, -0.2, 1.2, -0.8, 0.4, 0.1, 1.1]),
}
GENDER_TASTE = {
    "female": np.array([0.3, 0.2, 1.1, 0.1, -0.5, 0.3, 0.1, 0.2]),
    "male": np.array([0.2, 0.2, -0.9, 0.0, 0.8, -0.1, 0.0, 0.0]),
    "unspecified": np.zeros(8),
}
LOCALE_TASTE = {"en-US": np.zeros(8), "zh-CN": np.array([0, 0, 0.2, 0.6, 0, 0, 0, 0])}
REGION_TASTE = {"north": np.array([0, 0.7, 0, 0, 0, 0, 0, 0]), "south": np.array([0, -0.7, 0, 0, 0, 0, 0, 0]),
                "east": np.zeros(8), "west": np.zeros(8)}
# Weight on the item's (log) price level within its category: gold buys premium.
TIER_PRICE_TASTE = {"bronze": -0.9, "silver": 0.0, "gold": 0.9}

EN_FIRST = {
    "female": ["Emma", "Olivia", "Ava", "Sophia", "Mia", "Emily", "Grace", "Chloe", "Hannah",
               "Lily", "Sarah", "Laura", "Karen", "Linda", "Susan", "Nancy"],
    "male": ["Liam", "Noah", "James", "Oliver", "Ethan", "Lucas", "Henry", "Jack", "Daniel",
             "Michael", "David", "Robert", "Thomas", "Mark", "Paul", "Steven"],
}
EN_LAST = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
           "Martinez", "Wilson", "Anderson", "Taylor", "Thomas", "Moore", "Jackson", "Martin",
           "Lee", "Clark", "Lewis", "Walker", "Young", "Allen", "King", "Wright", "Scott",
           "Green", "Baker", "Adams", "Nelson", "Hill"]
ZH_SURNAMES = [("王", "wang"), ("李", "li"), ("张", "zhang"), ("刘", "liu"), ("陈", "chen"),
               ("杨", "yang"), ("黄", "huang"), ("赵", "zhao"), ("吴", "wu"), ("周", "zhou"),
               ("徐", "xu"), ("孙", "sun"), ("马", "ma"), ("朱", "zhu"), ("胡", "hu"),
               ("郭", "guo"), ("何", "he"), ("林", "lin"), ("高", "gao"), ("罗", "luo")]
ZH_GIVEN = {
    "female": [("芳", "fang"), ("娜", "na"), ("敏", "min"), ("静", "jing"), ("丽", "li"),
               ("婷", "ting"), ("雪", "xue"), ("慧", "hui"), ("玲", "ling"), ("燕", "yan"),
               ("晓梅", "xiaomei"), ("欣怡", "xinyi"), ("雨桐", "yutong"), ("思琪", "siqi")],
    "male": [("伟", "wei"), ("强", "qiang"), ("磊", "lei"), ("军", "jun"), ("洋", "yang"),
             ("勇", "yong"), ("杰", "jie"), ("涛", "tao"), ("明", "ming"), ("浩然", "haoran"),
             ("子轩", "zixuan"), ("宇航", "yuhang"), ("建国", "jianguo")],
}
US_TIMEZONES = {"north": "America/Chicago", "south": "America/Chicago",
                "east": "America/New_York", "west": "America/Los_Angeles"}
US_AREA_CODES = ["212", "312", "415", "617", "713", "206", "305", "404", "512", "303"]
# Daily rhythm: the local hour each age band is most active around (a customer's own hour
# scatters around it), and the spread of their events around their own hour.
ACTIVE_HOUR = {"18-24": 21.5, "25-34": 20.0, "35-44": 19.0, "45-54": 12.5, "55+": 9.5}
ACTIVE_HOUR_SPREAD = 2.0      # customers' own hours around their segment's (hours, sd)
EVENT_HOUR_SPREAD = 1.0       # events around the customer's own hour (hours, sd)
OFF_RHYTHM_SHARE = 0.15       # events at a random time of day


@dataclass
class DemoData:
    """Generated rows, ready for ``import_rows``; ``taste`` is the hidden affinity of each
    user (rows, in ``users`` order) for each item (columns, ``items`` order) the events were
    drawn from, and ``active_hour`` each user's own local hour of activity."""

    users: list[dict[str, Any]]
    items: list[dict[str, Any]]
    events: list[dict[str, Any]]
    taste: np.ndarray | None = None
    active_hour: np.ndarray | None = None


@dataclass
class DemoSummary:
    """What ``build_demo_shop`` wrote."""

    seed: int
    users: int
    items: int
    events: int
    events_by_kind: dict[str, int]
    first_event: str
    last_event: str
    reports: dict[str, ImportReport] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def inserted(self) -> int:
        return sum(r.inserted for r in self.reports.values())

    @property
    def changed(self) -> int:
        return sum(r.inserted + r.updated for r in self.reports.values())


def _pick(rng: np.random.Generator, options: Any, weights: Any = None) -> Any:
    index = rng.choice(len(options), p=None if weights is None else np.asarray(weights) / np.sum(weights))
    return options[int(index)]


def _make_users(rng: np.random.Generator, n_users: int) -> list[dict[str, Any]]:
    users = []
    for n in range(1, n_users + 1):
        age_band = _pick(rng, AGE_BANDS, AGE_WEIGHTS)
        gender = _pick(rng, GENDERS, GENDER_WEIGHTS)
        region = _pick(rng, REGIONS)
        tier = _pick(rng, TIERS, TIER_WEIGHTS)
        name_gender = gender if gender != "unspecified" else _pick(rng, ("female", "male"))
        if rng.random() < ZH_SHARE:
            locale, timezone = "zh-CN", "Asia/Shanghai"
            surname, surname_py = _pick(rng, ZH_SURNAMES)
            given, given_py = _pick(rng, ZH_GIVEN[name_gender])
            name, handle = surname + given, f"{given_py}.{surname_py}"
            phone = "+861" + str(_pick(rng, ("3", "5", "8"))) + "".join(
                str(d) for d in rng.integers(0, 10, size=9))
        else:
            locale, timezone = "en-US", US_TIMEZONES[region]
            first, last = _pick(rng, EN_FIRST[name_gender]), _pick(rng, EN_LAST)
            name, handle = f"{first} {last}", f"{first}.{last}".lower()
            # 555-01xx numbers are reserved for fiction.
            phone = f"+1{_pick(rng, US_AREA_CODES)}5550{int(rng.integers(100, 200))}"
        user = {
            "external_id": f"U{n:05d}", "name": name, "email": f"{handle}{n}@example.com",
            "phone": phone, "locale": locale, "timezone": timezone,
            "age_band": age_band, "gender": gender, "region": region, "tier": tier,
        }
        for column, rate in CONSENT_RATES.items():
            user[column] = "yes" if rng.random() < rate else "no"
        users.append(user)
    return users


def _make_items(rng: np.random.Generator, n_items: int) -> tuple[list[dict[str, Any]], np.ndarray,
                                                                   np.ndarray, np.ndarray]:
    """Items plus, per item, its category index, brand index (global) and price level."""
    items, cat_index, brand_index, price_level = [], [], [], []
    per_category = [n_items // len(CATEGORIES) + (1 if c < n_items % len(CATEGORIES) else 0)
                    for c in range(len(CATEGORIES))]
    for c, (category, spec) in enumerate(CATALOG.items()):
        combos = [(b, a, o) for b in range(len(spec["brands"])) for a in range(len(spec["adjectives"]))
                  for o in range(len(spec["nouns"]))]
        order = rng.permutation(len(combos))
        low, high = spec["price"]
        for k in range(per_category[c]):
            b, a, o = combos[int(order[k % len(combos)])]
            brand, multiplier = spec["brands"][b]
            adj_en, adj_zh = spec["adjectives"][a]
            noun_en, noun_zh = spec["nouns"][o]
            level = float(rng.normal(0, 0.35)) + np.log(multiplier)
            base = np.exp(np.log(low) + (np.log(high) - np.log(low)) * float(rng.uniform(0.2, 0.6)))
            price = max(round(float(base * np.exp(level))) - 0.01, 4.99)
            sku = f"{spec['prefix']}-{k + 1:04d}"
            item = {
                "sku": sku,
                "title": f"{brand} {adj_en} {noun_en}",
                "description": f"{adj_en} {noun_en.lower()} by {brand}. {spec['blurb'][0]}",
                "category": category, "brand": brand, "price": price, "currency": "USD",
                "sale_price": None,
                "stock": 0 if rng.random() < 0.08 else int(rng.integers(1, 200)),
                "url": f"https://shop.example/p/{sku}",
                "image_url": f"https://shop.example/img/{sku}.jpg",
                "active": "no" if rng.random() < 0.03 else "yes",
                "tags": "|".join(sorted(rng.choice(spec["tags"], size=int(rng.integers(2, 4)),
                                                   replace=False).tolist())),
                "title_zh": f"{brand} {adj_zh}{noun_zh}",
                "description_zh": f"{brand}{adj_zh}{noun_zh}。{spec['blurb'][1]}",
            }
            if rng.random() < 0.3:
                discount = float(_pick(rng, (0.10, 0.15, 0.20, 0.25, 0.30, 0.40)))
                item["sale_price"] = round(price * (1 - discount), 2)
            items.append(item)
            cat_index.append(c)
            brand_index.append(c * 4 + b)
            price_level.append(level)
    levels = np.array(price_level)
    return items, np.array(cat_index), np.array(brand_index), (levels - levels.mean()) / levels.std()


def generate_demo_data(*, seed: int = 7, n_users: int = 2000, n_items: int = 400,
                       n_events: int = 40000, end: _dt.datetime | None = None) -> DemoData:
    """The demo shop's rows, without touching a database (same seed and ``end`` -> same
    rows). Events fall in the DEMO_DAYS before ``end`` (default: ``demo_end()``)."""
    if n_users < 1 or n_items < len(CATEGORIES):
        raise PushgenError(f"the demo needs at least 1 user and {len(CATEGORIES)} items")
    rng = np.random.default_rng(seed)
    users = _make_users(rng, n_users)
    items, item_cat, item_brand, item_price = _make_items(rng, n_items)
    n_brands = len(CATEGORIES) * 4

    # Hidden tastes: profile-driven category and price affinity + personal noise.
    cat_taste = np.stack([AGE_TASTE[u["age_band"]] + GENDER_TASTE[u["gender"]]
                          + LOCALE_TASTE[u["locale"]] + REGION_TASTE[u["region"]] for u in users])
    cat_taste += rng.normal(0, 0.6, size=cat_taste.shape)
    price_taste = np.array([TIER_PRICE_TASTE[u["tier"]] for u in users]) + rng.normal(0, 0.3, n_users)
    brand_taste = np.zeros((n_users, n_brands))
    favourites = rng.integers(0, n_brands, size=(n_users, 2))
    np.put_along_axis(brand_taste, favourites, 0.8, axis=1)
    user_factors = rng.normal(0, 0.5, size=(n_users, 4))
    item_factors = rng.normal(0, 0.5, size=(len(items), 4))
    popularity = rng.normal(0, 0.5, size=len(items))
    inactive = np.array([i["active"] == "no" for i in items])
    scores = (cat_taste[:, item_cat] + np.outer(price_taste, item_price)
              + brand_taste[:, item_brand] + user_factors @ item_factors.T + popularity
              - 1.5 * inactive)

    # Activity: heavy-tailed, ~5% of users have no history at all (cold start).
    activity = rng.lognormal(0, 0.8, n_users) * np.array(
        [1.4 if u["tier"] == "gold" else 1.0 for u in users])
    activity[rng.random(n_users) < 0.05] = 0
    n_views = rng.multinomial(max(int(n_events / 1.3), 0), activity / activity.sum())

    end = int((end or demo_end()).timestamp())
    span = DEMO_DAYS * 86400
    # A separate stream for the daily rhythm, so tastes and purchases stay as they were.
    clock = np.random.default_rng([seed, 1])
    own_hour = np.array([ACTIVE_HOUR[u["age_band"]] for u in users]) + clock.normal(
        0, ACTIVE_HOUR_SPREAD, n_users)
    offsets = _Offsets(end, DEMO_DAYS)
    events: list[dict[str, Any]] = []
    seen: set[tuple[int, int, str, int]] = set()
    for u, count in enumerate(n_views):
        if count == 0:
            continue
        s = scores[u]
        weights = np.exp(s - s.max())
        chosen = rng.choice(len(items), size=int(count), p=weights / weights.sum())
        # Items the user likes more (relative to their own average) get carted more often.
        relative = (s[chosen] - s.mean()) / (s.std() + 1e-9)
        cart_p = np.clip(0.08 * np.exp(0.6 * relative), 0.02, 0.6)
        carted = rng.random(count) < cart_p
        bought = carted & (rng.random(count) < 0.45)
        view_ts = _in_rhythm(end - 7200 - rng.integers(0, span, size=count), own_hour[u],
                             offsets.of(users[u]["timezone"]), clock, end, span)
        cart_ts = view_ts + rng.integers(30, 1800, size=count)
        buy_ts = cart_ts + rng.integers(60, 3600, size=count)
        user = users[u]["external_id"]
        for k, i in enumerate(chosen):
            sku = items[int(i)]["sku"]
            for kind, ts, happened in (("view", view_ts[k], True), ("cart", cart_ts[k], carted[k]),
                                       ("purchase", buy_ts[k], bought[k])):
                key = (u, int(i), kind, int(ts))
                if happened and key not in seen:  # same second, same item: one event
                    seen.add(key)
                    events.append({"user": user, "item": sku, "kind": kind, "ts": _iso(ts)})
    events.sort(key=lambda e: (e["ts"], e["user"], e["item"], e["kind"]))
    return DemoData(users=users, items=items, events=events, taste=scores,
                    active_hour=np.mod(np.round(own_hour), 24).astype(int))


class _Offsets:
    """UTC offset (seconds) of a timezone on each day of the demo history, computed once
    per zone, so event times follow daylight saving time as real clocks do."""

    def __init__(self, end: int, days: int) -> None:
        self.end, self.days = end, days
        self._zones: dict[str, np.ndarray] = {}

    def of(self, name: str) -> np.ndarray:
        if name not in self._zones:
            from zoneinfo import ZoneInfo

            zone = ZoneInfo(name)
            self._zones[name] = np.array([
                int(_dt.datetime.fromtimestamp(self.end - d * 86400, zone).utcoffset()
                    .total_seconds()) for d in range(self.days + 2)])
        return self._zones[name]


def _in_rhythm(raw: np.ndarray, hour: float, offsets: np.ndarray,
               clock: np.random.Generator, end: int, span: int) -> np.ndarray:
    """Event times on the same days as ``raw`` but at the customer's local time of day:
    around ``hour`` (a few off-rhythm ones anywhere), kept inside the history (with room
    for the cart and purchase that may follow)."""
    n = len(raw)
    local_hour = np.where(clock.random(n) < OFF_RHYTHM_SHARE, clock.uniform(0, 24, n),
                          clock.normal(hour, EVENT_HOUR_SPREAD, n))
    seconds = (np.mod(local_hour, 24) * 3600).astype(np.int64)
    offset = offsets[np.clip((end - raw) // 86400, 0, len(offsets) - 1)]
    local = raw + offset
    ts = local - local % 86400 + seconds - offset
    latest, earliest = end - 7200 - 5400, end - 7200 - span
    ts = np.where(ts > latest, ts - 86400, ts)
    return np.where(ts < earliest, ts + 86400, ts)


def _iso(epoch: Any) -> str:
    return _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc).isoformat()


def build_demo_shop(db: Database, *, seed: int = 7, n_users: int = 2000, n_items: int = 400,
                    n_events: int = 40000,
                    progress: Callable[[int, int], None] | None = None) -> DemoSummary:
    """Generate the demo shop and import it through ``import_rows``, in one transaction.

    Running it again with the same seed changes nothing. A database that already holds
    other data is refused (nothing is written) so the demo never mixes with real data.
    ``progress(rows_done, rows_total)`` is called as rows are written.
    """
    started = time.perf_counter()
    stored_end = get_meta(db, DEMO_END_KEY)
    end = _dt.datetime.fromisoformat(stored_end) if stored_end else demo_end()
    data = generate_demo_data(seed=seed, n_users=n_users, n_items=n_items, n_events=n_events,
                              end=end)
    total = len(data.users) + len(data.items) + len(data.events)
    had_data = any(catalog.catalog_counts(db)[t] for t in ("users", "items", "events"))
    reports: dict[str, ImportReport] = {}
    offset = 0
    with db.atomic():
        for kind, rows in (("users", data.users), ("items", data.items), ("events", data.events)):
            tick = (lambda done, _t, base=offset: progress(base + done, total)) if progress else None
            reports[kind] = import_rows(db, kind, rows, source=f"<demo {kind}>", progress=tick)
            offset += len(rows)
        if had_data and any(r.inserted or r.updated for r in reports.values()):
            raise PushgenError("the database already holds other data; build the demo in a new "
                               "file (e.g. --db demo.db)")
        set_meta(db, DEMO_END_KEY, end.isoformat())
        set_meta(db, DEMO_PARAMS_KEY, json.dumps({"seed": seed, "n_users": n_users,
                                                  "n_items": n_items, "n_events": n_events}))
    by_kind: dict[str, int] = {}
    for event in data.events:
        by_kind[event["kind"]] = by_kind.get(event["kind"], 0) + 1
    return DemoSummary(
        seed=seed, users=len(data.users), items=len(data.items), events=len(data.events),
        events_by_kind=by_kind,
        first_event=data.events[0]["ts"] if data.events else "",
        last_event=data.events[-1]["ts"] if data.events else "",
        reports=reports, seconds=time.perf_counter() - started)


# --- a campaign's results, played from the hidden tastes -------------------------------------
# Per exported message: delivered (else bounced, some hard), opened, then clicked and
# converted with chances that grow with how much the customer's hidden taste likes the
# message's lead item (z-scored against their taste for the whole catalog). Every customer
# assigned to the campaign, hold-out included, may also buy on their own in the window.
DELIVERED = 0.97
HARD_BOUNCE_SHARE = 0.3
OPENED = 0.35
CLICK_BASE, CLICK_TASTE = 0.10, 0.8          # P(click | open) = base * exp(taste * z)
CONVERT_BASE, CONVERT_TASTE = 0.35, 0.4      # P(convert | click) = base * exp(taste * z)
UNSUBSCRIBED, COMPLAINED = 0.004, 0.001
ORGANIC_PURCHASE = 0.03                      # own purchases in the window, any group


@dataclass
class SimulatedResults:
    """What ``simulate_outcomes`` played: the platform's report and the shop's orders."""

    outcomes: list[dict[str, Any]]           # rows for ``import outcomes``
    purchases: list[dict[str, Any]]          # rows for ``import events`` (kind purchase)
    window: tuple[str, str]


def _when(t: _dt.datetime) -> str:
    return t.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def hidden_tastes(db: Database) -> tuple[DemoData, dict[str, int], dict[str, int], np.ndarray]:
    """The demo shop's data rebuilt from its seed, the row of each customer and column of
    each item, and each customer's taste for each item z-scored against their taste for the
    whole catalog (how much more than usual they like it)."""
    params = get_meta(db, DEMO_PARAMS_KEY)
    stored_end = get_meta(db, DEMO_END_KEY)
    if not params or not stored_end:
        raise PushgenError("outcomes can only be simulated for the demo shop (pushgen demo)")
    data = generate_demo_data(**json.loads(params), end=_dt.datetime.fromisoformat(stored_end))
    assert data.taste is not None
    taste = data.taste
    z = (taste - taste.mean(axis=1, keepdims=True)) / (taste.std(axis=1, keepdims=True) + 1e-9)
    return (data, {u["external_id"]: i for i, u in enumerate(data.users)},
            {it["sku"]: j for j, it in enumerate(data.items)}, z)


def simulate_outcomes(db: Database, campaign: str, *, attribution_days: int = 7
                      ) -> SimulatedResults:
    """Play the results of an exported campaign of the demo shop from its hidden tastes:
    customers whose taste matches the message's lead item click and convert more, so a
    ranked variant beats a random-pick one and the campaign beats its hold-out group. The
    same database gives the same rows every time (importing them twice changes nothing)."""
    from .store import outcomes as outcome_store

    data, user_pos, item_pos, z = hidden_tastes(db)
    taste = data.taste
    assert taste is not None
    spec = json.loads(get_meta(db, DEMO_PARAMS_KEY) or "{}")
    messages = outcome_store.messages_to_simulate(db, campaign)
    if not messages:
        raise PushgenError(f"campaign {campaign!r} has no exported message to simulate")
    outcomes: list[dict[str, Any]] = []
    purchases: list[dict[str, Any]] = []
    sends = [_dt.datetime.fromisoformat(m["send_at"].replace("Z", "+00:00")) for m in messages]
    start, end = min(sends), max(sends) + _dt.timedelta(days=attribution_days)

    def report(m: dict[str, Any], event: str, at: _dt.datetime, **extra: Any) -> None:
        outcomes.append({"draft_id": m["draft_id"], "event": event, "ts": _when(at), **extra})

    for m, t0 in zip(messages, sends):
        u, j = user_pos.get(m["external_id"]), item_pos.get(m["sku"])
        if u is None or j is None:
            continue
        # Each message's own random stream: whether it is delivered and opened does not
        # depend on which items other messages showed.
        rng = np.random.default_rng([spec["seed"], 2, m["draft_id"]])
        score = float(z[u, j])
        report(m, "sent", t0)
        if rng.random() >= DELIVERED:
            report(m, "bounced", t0 + _dt.timedelta(seconds=int(rng.integers(5, 600))),
                   bounce="hard" if rng.random() < HARD_BOUNCE_SHARE else "soft")
            continue
        t = t0 + _dt.timedelta(seconds=int(rng.integers(5, 120)))
        report(m, "delivered", t)
        if rng.random() < UNSUBSCRIBED:
            report(m, "unsubscribed", t + _dt.timedelta(hours=int(rng.integers(1, 48))))
        elif rng.random() < COMPLAINED:
            report(m, "complained", t + _dt.timedelta(hours=int(rng.integers(1, 48))))
        if rng.random() >= OPENED:
            continue
        t += _dt.timedelta(seconds=int(rng.integers(60, 6 * 3600)))
        report(m, "opened", t)
        if rng.random() >= min(CLICK_BASE * np.exp(CLICK_TASTE * score), 0.6):
            continue
        t += _dt.timedelta(seconds=int(rng.integers(5, 600)))
        report(m, "clicked", t, item=m["sku"])
        if rng.random() >= min(CONVERT_BASE * np.exp(CONVERT_TASTE * score), 0.85):
            continue
        t += _dt.timedelta(seconds=int(rng.integers(60, 7200)))
        item = data.items[j]
        price = item["sale_price"] if item["sale_price"] is not None else item["price"]
        report(m, "converted", t, item=m["sku"], value=round(float(price), 2))
        purchases.append({"user": m["external_id"], "item": m["sku"], "kind": "purchase",
                          "ts": _when(t)})
    # Purchases nobody sent a message for: every assigned customer, hold-out included.
    seconds = int((end - start).total_seconds())
    sellable = np.array([it["active"] == "yes" for it in data.items])
    for ext in outcome_store.assigned_customers(db, campaign):
        u = user_pos.get(ext)
        if u is None:
            continue
        rng = np.random.default_rng([spec["seed"], 3, u])
        if rng.random() >= ORGANIC_PURCHASE:
            continue
        w = np.exp(taste[u] - taste[u].max()) * sellable
        j = int(rng.choice(len(data.items), p=w / w.sum()))
        at = start + _dt.timedelta(seconds=int(rng.integers(0, seconds)))
        purchases.append({"user": ext, "item": data.items[j]["sku"], "kind": "purchase",
                          "ts": _when(at)})
    return SimulatedResults(outcomes, purchases, (_when(start), _when(end)))


__all__ = ["build_demo_shop", "generate_demo_data", "DemoSummary", "DemoData", "CATEGORIES",
           "AGE_BANDS", "GENDERS", "REGIONS", "TIERS", "DEMO_DAYS", "demo_end",
           "simulate_outcomes", "SimulatedResults", "hidden_tastes"]
