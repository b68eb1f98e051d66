"""Deterministic synthetic marketplace: landing files per the data contract plus hidden truth.

The generator simulates a marketplace day by day and writes what upstream systems would
deliver into ``<root>/landing/<source>/dt=YYYY-MM-DD/``. Everything the scoring code must
*not* see (each merchant's hidden archetype, its true conduct rates and score, the review
and complaint attacks, every injected fault) goes to ``<root>/truth/``, which lets tests
and quality checks measure the pipeline against ground truth.

Design
------
* **Deterministic.** Every random draw comes from ``numpy.random.Generator(PCG64(...))``
  seeded from ``(seed, stream, day)``; no wall clock is read; gzip members carry
  ``mtime=0`` and Parquet files use fixed writer settings. Same arguments give
  byte-identical landing files. Streams are separated per purpose (events, file layout,
  fault injection) so that e.g. a different ``malformed_row_share`` leaves the event data
  unchanged.
* **Streaming and vectorised.** The loop is over days; within a day every source is built
  with numpy/Polars column operations (Python loops only touch the few injected faults).
  Events whose delivery lies in the future (next-day deliveries, later complaint and return
  versions) wait in a small per-day buffer, so memory stays bounded by a few weeks of
  in-flight events, not by the size of the run.
* **Warm-up.** Orders of ``_WARMUP_DAYS`` days before ``start`` are simulated (without
  writing sales) so that returns, complaints and reviews that lag their order arrive at a
  steady rate from the first landing day on.

Truth files
-----------
``truth/merchants.parquet``
    One row per merchant: ``merchant_id``, ``name``, ``category``, ``archetype``, ``size``
    (mean daily orders), ``registered_on``, the true per-order conduct rates
    (``true_defect_rate``, ``true_nad_rate``, ``true_late_rate``, ``true_cancel_rate``),
    ``true_response_hours`` (mean hours to first complaint response),
    ``true_unresolved_rate`` (share of complaints not ending ``resolved``),
    ``true_rating_mean`` (expected organic star rating), ``licence_state``
    (``valid``/``expired``/``missing``/``not_required``, as of the last day), ``is_bad``,
    ``bad_dimension`` and ``true_conduct_score`` (see :func:`conduct_score`).
``truth/attacks.parquet``
    ``merchant_id``, ``kind`` (``review_campaign``/``review_bombing``/
    ``collective_complaint``), ``start``, ``end``, ``n_events``.
``truth/malformed.parquet``
    ``source``, ``dt``, ``file`` (path relative to the root), ``row_number`` (1-based data
    row, null for a file-level fault), ``kind``.
``truth/generation.json``
    The arguments and the summary counts.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Final

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from transforms.errors import ConfigError

__all__ = [
    "ARCHETYPES",
    "CATEGORIES",
    "CONTRACT_COLUMNS",
    "FORMATS",
    "SOURCES",
    "GenerationSummary",
    "conduct_score",
    "generate_marketplace",
]

# ----------------------------------------------------------------------------- contract

SOURCES: Final = ("merchants", "sales", "reviews", "complaints", "returns")
#: File formats in rotation order; each source cycles through all of them.
FORMATS: Final = ("csv", "jsonl", "parquet", "csv.gz", "jsonl.gz")

# Logical column kinds. Internally dates are Int32 epoch days and timestamps Int64 epoch
# microseconds (UTC), which keeps arithmetic and fault injection trivial; they become
# real Date/Datetime values or ISO strings only when a file is written.
_S, _D, _T, _I, _B, _F = "str", "date", "ts", "int", "bool", "dec"

_COLUMNS: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "merchants": (
        ("merchant_id", _S),
        ("name", _S),
        ("category", _S),
        ("registered_on", _D),
        ("license_expires_on", _D),
        ("status", _S),
    ),
    "sales": (
        ("merchant_id", _S),
        ("date", _D),
        ("orders", _I),
        ("late_shipments", _I),
        ("cancellations", _I),
    ),
    "reviews": (
        ("review_id", _S),
        ("merchant_id", _S),
        ("order_id", _S),
        ("reviewer_id", _S),
        ("rating", _I),
        ("text", _S),
        ("created_at", _T),
        ("verified_purchase", _B),
    ),
    "complaints": (
        ("complaint_id", _S),
        ("merchant_id", _S),
        ("order_id", _S),
        ("complainant_id", _S),
        ("category", _S),
        ("channel", _S),
        ("opened_at", _T),
        ("first_response_at", _T),
        ("resolved_at", _T),
        ("status", _S),
        ("text", _S),
        ("updated_at", _T),
    ),
    "returns": (
        ("return_id", _S),
        ("merchant_id", _S),
        ("order_id", _S),
        ("requested_at", _T),
        ("reason", _S),
        ("status", _S),
        ("refund_amount", _F),
        ("resolved_at", _T),
        ("updated_at", _T),
    ),
}
#: Column names of each landing source, in file order, exactly as the contract names them.
CONTRACT_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    s: tuple(c for c, _ in cols) for s, cols in _COLUMNS.items()
}

_INTERNAL: Final = {
    _S: pl.String,
    _D: pl.Int32,
    _T: pl.Int64,
    _I: pl.Int64,
    _B: pl.Boolean,
    _F: pl.Float64,
}
# refund_amount is float64 in Parquet (the contract's "decimal"): it is money rounded to
# cents, and a double is the only Parquet number type that can carry the injected NaN.
_ARROW: Final = {
    _S: pa.string(),
    _D: pa.date32(),
    _T: pa.timestamp("us", tz="UTC"),
    _I: pa.int64(),
    _B: pa.bool_(),
    _F: pa.float64(),
}
_ARROW_SCHEMA: Final = {
    s: pa.schema([(c, _ARROW[k]) for c, k in cols]) for s, cols in _COLUMNS.items()
}
# Sort key inside a delivered day: files are exported in event order.
_SORT_KEY: Final = {
    "merchants": "merchant_id",
    "sales": "merchant_id",
    "reviews": "created_at",
    "complaints": "updated_at",
    "returns": "updated_at",
}

_COMPLAINT_CATEGORIES: Final = (
    "quality",
    "not_as_described",
    "after_sales",
    "logistics",
    "counterfeit",
    "other",
)
_CHANNELS: Final = ("app", "hotline", "email", "regulator", "court")
_COMPLAINT_STATUS: Final = ("open", "resolved", "rejected", "escalated")
_RETURN_REASONS: Final = (
    "quality_defect",
    "not_as_described",
    "damaged",
    "wrong_item",
    "changed_mind",
    "other",
)
_RETURN_STATUS: Final = ("requested", "approved", "rejected", "refunded")
_MERCHANT_STATUS: Final = ("active", "suspended", "closed")

_DAY_US: Final = 86_400_000_000
_HOUR_US: Final = 3_600_000_000
_EPOCH: Final = date(1970, 1, 1)
_WARMUP_DAYS: Final = 10
# Share of events delivered the day after they happened (never before).
_NEXT_DAY_SHARE: Final = 0.15

# ----------------------------------------------------------------------------- market model


@dataclass(frozen=True)
class _Category:
    """Base per-order rates of a category for a well-behaved merchant."""

    name: str
    weight: float  # share of merchants
    defect: float  # quality problem per order
    nad: float  # not-as-described per order
    late: float  # late shipment per order
    cancel: float  # seller-caused cancellation per order
    changed_mind: float  # changed-mind / size returns per order
    price: float  # typical order value (refund amounts)
    regulated: bool  # a licence is legally required
    zh: str
    en: str


#: Categories with base rates: apparel has many changed-mind/size returns, food almost no
#: returns, electronics the highest defect rate; food, beauty and baby are regulated.
CATEGORIES: Final = (
    _Category("electronics", 0.14, 0.025, 0.008, 0.050, 0.012, 0.025, 600.0, False, "数码", "Electronics"),
    _Category("apparel", 0.22, 0.012, 0.012, 0.040, 0.010, 0.090, 150.0, False, "服饰", "Apparel"),
    _Category("food", 0.12, 0.004, 0.002, 0.030, 0.008, 0.002, 60.0, True, "食品", "Foods"),
    _Category("beauty", 0.12, 0.008, 0.006, 0.035, 0.008, 0.015, 120.0, True, "美妆", "Beauty"),
    _Category("home", 0.13, 0.012, 0.008, 0.045, 0.010, 0.030, 200.0, False, "家居", "Home"),
    _Category("baby", 0.08, 0.008, 0.005, 0.035, 0.008, 0.020, 150.0, True, "母婴", "Baby"),
    _Category("books", 0.08, 0.004, 0.002, 0.030, 0.006, 0.010, 50.0, False, "图书", "Books"),
    _Category("sports", 0.11, 0.012, 0.008, 0.040, 0.010, 0.040, 250.0, False, "运动", "Sports"),
)
_N_CAT: Final = len(CATEGORIES)
_REGULATED: Final = np.array([i for i, c in enumerate(CATEGORIES) if c.regulated])

#: Hidden merchant archetypes; index = code used internally.
ARCHETYPES: Final = (
    "good",
    "poor_quality",
    "misleading",
    "neglectful_after_sales",
    "late_fulfilment",
    "unlicensed",
    "review_buyer",
    "bombed_good",
    "collective_dispute",
)
(
    _GOOD,
    _POOR,
    _MISLEAD,
    _NEGLECT,
    _LATE,
    _UNLIC,
    _BUYER,
    _BOMBED,
    _COLLECTIVE,
) = range(len(ARCHETYPES))
# Shares of the non-good archetypes; "good" takes the rest (~55 %).
_ARCHETYPE_SHARE: Final = {
    _POOR: 0.06,
    _MISLEAD: 0.06,
    _NEGLECT: 0.06,
    _LATE: 0.06,
    _UNLIC: 0.05,
    _BUYER: 0.05,
    _BOMBED: 0.055,
    _COLLECTIVE: 0.055,
}
_BAD_DIMENSION: Final = {
    _POOR: "quality",
    _MISLEAD: "description",
    _NEGLECT: "after_sales",
    _LATE: "fulfilment",
    _UNLIC: "compliance",
    _BUYER: "quality",
}
_ATTACKED: Final = (_BUYER, _BOMBED, _COLLECTIVE)

# Merchant size: lognormal mean daily orders, mean 5, heavy right tail (a few merchants
# with thousands of orders a day at 10^5 merchants, a median below one order a day).
_SIZE_SIGMA: Final = 2.0
_SIZE_MU: Final = float(np.log(5.0) - _SIZE_SIGMA**2 / 2)
_SIZE_MAX: Final = 25_000.0

# Benchmarks of the conduct score that are not category rates.
_BASE_RESPONSE_HOURS: Final = 12.0
_BASE_UNRESOLVED: Final = 0.10

# Relative order volume by weekday (Mon..Sun) and by hour of day (UTC).
_WEEKDAY: Final = np.array([0.95, 0.95, 0.97, 1.0, 1.05, 1.1, 1.0])
_HOURLY: Final = np.array(
    [1, .6, .4, .3, .3, .5, 1, 2, 3, 4, 4.5, 5, 5, 4.5, 4.5, 4.5, 4.5, 5, 5.5, 6, 7, 7, 5.5, 3]
)
_HOURLY_P: Final = _HOURLY / _HOURLY.sum()

# Lags in days from an order to its review / return request / complaint.
_REVIEW_LAG_P: Final = np.array([0.15, 0.3, 0.25, 0.15, 0.08, 0.05, 0.02])
_RETURN_LAG_P: Final = np.array([0.0, 0.1, 0.2, 0.2, 0.15, 0.12, 0.08, 0.06, 0.05, 0.04])
_COMPLAINT_LAG_P: Final = np.array([0.1, 0.15, 0.15, 0.12, 0.1, 0.08, 0.07, 0.06, 0.05, 0.04,
                                    0.03, 0.02, 0.015, 0.01, 0.005])

# ----------------------------------------------------------------------------- text bank

# Review kinds: 0 positive, 1 neutral, 2..6 negative reasons.
_R_POS, _R_NEU, _R_QUAL, _R_MISMATCH, _R_LATE, _R_SERVICE, _R_NEG = range(7)

_REVIEW_TEXT: Final[tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]] = (
    (  # positive
        ("质量很好，{item}和图片一样，物超所值！", "发货很快，包装严实，{item}很满意。",
         "第二次回购了，{item}一如既往的好。", "卖家服务态度好，{item}用着不错，推荐购买。",
         "性价比很高，{item}做工精细，五星好评！", "东西不错，物流也快，{item}家里人都说好。",
         "非常满意的一次购物，{item}质量杠杠的。", "好评！{item}收到就用上了，效果很好。"),
        ("Great {item}, exactly as pictured. Would buy again!",
         "Fast shipping and the {item} works perfectly.",
         "Really happy with this {item}, good value for money.",
         "Second time ordering, the {item} is as good as before.",
         "Seller was helpful and the {item} arrived well packed.",
         "Excellent quality {item}. 5 stars, highly recommend.",
         'The {item} is "perfect", my family loves it.'),
    ),
    (  # neutral
        ("{item}还行吧，一般般，对得起这个价格。", "中规中矩，{item}没有特别惊喜。",
         "物流有点慢，{item}本身还可以。", "{item}凑合能用，包装有点简陋。"),
        ("The {item} is okay, nothing special.", "Average {item}, does the job for the price.",
         "Delivery was a bit slow, the {item} itself is fine.",
         "It's fine, I guess. The {item} feels a bit cheap."),
    ),
    (  # quality problem
        ("{item}质量太差了，用了两天就坏了。", "收到的{item}有破损，做工粗糙。",
         "{item}有异味，质量堪忧，不建议购买。", "{item}开线了，一看就是次品。",
         "怀疑是假货，{item}和正品差别很大。", "{item}第一次用就出问题了，差评！"),
        ("The {item} broke after two days. Poor quality.",
         "Arrived damaged, the {item} is cheaply made.",
         "Defective {item}, stopped working within a week.",
         "Terrible quality, the {item} fell apart.",
         "This {item} smells weird and feels fake."),
    ),
    (  # mismatch / not as described
        ("与描述不符，{item}颜色完全不一样。", "货不对板！{item}和图片差太多了。",
         "实物与图片严重不符，{item}尺寸也不对。", "{item}跟详情页写的不一样，虚假宣传。",
         "图片仅供参考？{item}根本不是一个东西，与描述不符。"),
        ("Not as described, the {item} is a different colour.",
         "The {item} looks nothing like the picture.",
         "Misleading listing, the {item} is much smaller than shown.",
         "Not as described at all. The {item} is a different model.",
         "Photos are fake, this {item} is not what was advertised."),
    ),
    (  # late / cancelled
        ("发货太慢了，等了十天才收到{item}。", "下单一周还没发货，最后只能取消。",
         "物流慢得离谱，{item}迟迟不到。"),
        ("Took forever to ship, the {item} arrived 10 days late.",
         "Seller cancelled my order for the {item} without explanation.",
         "Shipping was very slow and tracking never updated."),
    ),
    (  # slow / missing after-sales service
        ("客服一直不回复，{item}有问题也没人管。", "申请退货一周了没人处理，售后太差。",
         "退款拖了半个月还没到账，再也不买了。", "联系卖家三天都没回应，{item}的问题至今没解决。"),
        ("Customer service never replied about my {item}.",
         "Return request ignored for a week, terrible after-sales.",
         "Still waiting for my refund after 3 weeks.",
         "Seller stopped answering once I reported the problem with the {item}."),
    ),
    (  # generic negative
        ("不满意，{item}不值这个价。", "一般，不会再买了。", "体验很差。"),
        ("Not happy with the {item}, not worth the price.", "Disappointed. Won't order again.",
         "Meh."),
    ),
)

_COMPLAINT_TEXT: Final[tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]] = (
    (  # quality
        ("购买的{item}质量有问题，使用不久即损坏，要求退款。",
         "{item}存在明显质量缺陷，商家拒绝处理。",
         "{item}收到就是坏的，要求换货。"),
        ("The {item} I bought is defective and broke within days. I want a refund.",
         "Product quality issue: the {item} arrived broken, seller refuses to help."),
    ),
    (  # not_as_described
        ("商品与描述不符，{item}的材质与页面宣传不一致，货不对板。",
         "实物与图片不符，商家虚假宣传，要求退货退款。", "{item}规格与描述不符，请平台介入。"),
        ("Item not as described: the {item} is a different material than advertised.",
         "The {item} looks nothing like the picture, misleading listing. Please intervene."),
    ),
    (  # after_sales
        ("申请退货后商家一直不处理，客服不回复。", "退款迟迟不到账，联系商家无果。",
         "商家拒绝履行七天无理由退货。"),
        ("Return request ignored for over a week, no reply from seller.",
         "Refund still not received, seller not responding.",
         "Seller refuses the 7-day return policy."),
    ),
    (  # logistics
        ("下单后迟迟不发货，物流信息一直不更新。", "{item}超过承诺时间仍未送达。",
         "快递丢件，商家不管。"),
        ("Order not shipped for a week, tracking never updated.", "The {item} was never delivered.",
         "Parcel lost, seller won't help."),
    ),
    (  # counterfeit
        ("怀疑{item}是假冒品牌，防伪码查询不到。", "购买的{item}是仿冒品，要求假一赔三。"),
        ("The {item} is counterfeit, the serial number is invalid.",
         "Fake branded {item}, I demand compensation."),
    ),
    (  # other
        ("商家态度恶劣，辱骂顾客。", "发票一直不给开。"),
        ("Seller was rude on chat.", "Never received the invoice I asked for."),
    ),
)

# Attack templates: few base texts, varied only by a short suffix -> near-duplicates.
_CAMPAIGN_TEXT: Final = (
    ("好评好评！质量非常好，强烈推荐！", "超级好用，物超所值，五星好评！",
     "宝贝收到了，非常满意，必须好评！"),
    ("Amazing product!! Best purchase ever, highly recommend!",
     "Excellent quality, fast delivery, 5 stars!", "Love it! Exactly as described, great seller!"),
)
_BOMBING_TEXT: Final = (
    ("垃圾商家，千万别买！", "骗子店铺，大家避雷！", "质量极差，差评！"),
    ("Worst seller ever, do NOT buy!", "Scam store, avoid!!", "Terrible, total rip-off."),
)
# Free additions: commas, quotes and newlines on purpose (CSV quoting must round-trip).
_EXTRAS: Final = (
    ("", "\n追评：用了一个月，还行。", "（第二次反映了）", "，希望平台重视！", "。附图为证。",
     "\n订单号已附上，请尽快处理。", "，“客服”说会处理，结果没有下文。"),
    ("", ' I\'ve attached photos, "before" and "after".', "\nPlease handle this ASAP.",
     " Ordered on the app, paid by card.", ", again.", "\n\nUpdate: still the same."),
)
_VARIANTS: Final = (
    ("", "！", "！！", "👍", "～", "。", "，真心推荐", "[赞]", "!!!"),
    ("", "!", "!!", " :)", " 👍", ".", " Recommended.", "!!!", " 10/10"),
)
_ITEMS: Final = (
    (("耳机", "充电宝", "手机壳", "蓝牙音箱", "数据线"),
     ("headset", "power bank", "phone case", "bluetooth speaker", "charging cable")),
    (("连衣裙", "T恤", "牛仔裤", "外套", "运动鞋"),
     ("dress", "T-shirt", "pair of jeans", "jacket", "pair of sneakers")),
    (("坚果礼盒", "茶叶", "牛肉干", "蜂蜜", "咖啡豆"),
     ("nut gift box", "tea", "beef jerky", "honey", "bag of coffee beans")),
    (("面霜", "口红", "精华液", "面膜", "洗发水"),
     ("face cream", "lipstick", "serum", "face mask pack", "shampoo")),
    (("收纳盒", "床单", "不粘锅", "台灯", "毛巾"),
     ("storage box", "bed sheet", "frying pan", "desk lamp", "towel set")),
    (("奶瓶", "纸尿裤", "婴儿推车", "奶粉", "安抚奶嘴"),
     ("baby bottle", "diaper pack", "stroller", "formula milk", "pacifier")),
    (("绘本", "小说", "教辅书", "字典", "漫画"),
     ("picture book", "novel", "workbook", "dictionary", "comic")),
    (("瑜伽垫", "跑步鞋", "哑铃", "羽毛球拍", "运动水壶"),
     ("yoga mat", "pair of running shoes", "dumbbell set", "badminton racket",
      "water bottle")),
)
_NAME_PREFIX: Final = (
    ("鑫达", "华美", "优品", "佳佳", "乐购", "云尚",
     "天天", "金牌", "百信", "美家", "小米粒", "福满"),
    ("Sunny", "Golden", "Blue River", "Lucky", "Prime", "Urban", "Happy", "Green Leaf",
     "Silver Oak", "Northwind", "Red Lantern", "Maple"),
)
_NAME_SUFFIX: Final = (
    ("旗舰店", "专营店", "官方店", "小店", "商行", "精品馆"),
    (" Store", " Co., Ltd.", " Outlet", " Shop", " & Sons", ' "Official"'),
)


class _Pool:
    """A flat string pool addressed by (key, language) groups, for vectorised lookups."""

    def __init__(self, groups: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]) -> None:
        flat: list[str] = []
        self.offset = np.zeros((len(groups), 2), dtype=np.int64)
        self.size = np.zeros((len(groups), 2), dtype=np.int64)
        for k, langs in enumerate(groups):
            for lang, texts in enumerate(langs):
                self.offset[k, lang] = len(flat)
                self.size[k, lang] = len(texts)
                flat.extend(texts)
        self.series = pl.Series(flat, dtype=pl.String)

    def pick(self, key: np.ndarray, lang: np.ndarray, u: np.ndarray) -> pl.Series:
        """Gather one string per row: group ``(key, lang)``, member chosen by ``u`` in [0, 1)."""
        size = self.size[key, lang]
        idx = self.offset[key, lang] + np.minimum((u * size).astype(np.int64), size - 1)
        return self.series.gather(idx)


_REVIEW_POOL: Final = _Pool(_REVIEW_TEXT)
_COMPLAINT_POOL: Final = _Pool(_COMPLAINT_TEXT)
_ATTACK_POOL: Final = _Pool((_CAMPAIGN_TEXT, _BOMBING_TEXT))
_EXTRA_POOL: Final = _Pool((_EXTRAS, _VARIANTS))
_ITEM_POOL: Final = _Pool(_ITEMS)


def _render(
    tpl: pl.Series, item: pl.Series, extra: pl.Series, is_null: np.ndarray
) -> pl.Series:
    """Fill ``{item}`` into templates, append the extra, null where ``is_null``."""
    frame = pl.DataFrame({"t": tpl, "i": item, "e": extra, "n": is_null})
    return frame.select(
        pl.when(pl.col("n"))
        .then(None)
        .otherwise(
            pl.concat_str(
                [pl.col("t").str.replace("{item}", pl.col("i"), literal=True), pl.col("e")]
            )
        )
        .alias("text")
    ).to_series()


# ----------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class GenerationSummary:
    """What :func:`generate_marketplace` wrote.

    Attributes
    ----------
    root : Path
        The storage root written to.
    merchants, days, seed : int
        The generation arguments.
    start, end : date
        First and last business day (``end = start + days - 1``).
    rows_by_source, files_by_source : dict[str, int]
        Data rows and files written per landing source (rows of malformed files included).
    malformed_rows, malformed_files : int
        Injected row-level and file-level faults, all listed in ``truth/malformed.parquet``.
    """

    root: Path
    merchants: int
    days: int
    seed: int
    start: date
    end: date
    rows_by_source: dict[str, int]
    files_by_source: dict[str, int]
    malformed_rows: int
    malformed_files: int


def conduct_score(
    *,
    defect_ratio: np.ndarray,
    nad_ratio: np.ndarray,
    late_ratio: np.ndarray,
    cancel_ratio: np.ndarray,
    response_ratio: np.ndarray,
    unresolved_ratio: np.ndarray,
    rating_gap: np.ndarray,
    licence_bad: np.ndarray,
) -> np.ndarray:
    """True conduct score in [0, 100] from true rates relative to benchmarks.

    Each ratio is a merchant's true rate divided by its category's base rate (response
    hours by 12 h, the unresolved share by 10 %). A ratio becomes a penalty
    ``p(r) = clip(log2(r) / 3, 0, 1)``: 0 at or below the benchmark, 1 at eight times it.
    ``rating_gap`` is the category's base expected rating minus the merchant's, in stars
    (clipped to [0, 1] as the penalty), ``licence_bad`` is 1 for an expired or missing
    licence in a regulated category. The score multiplies one factor per dimension::

        100 * (1 - .30 p(defect)) * (1 - .25 p(nad))
            * (1 - .20 max(p(late), p(cancel)))
            * (1 - .20 max(p(response), p(unresolved)))
            * (1 - .15 rating_gap) * (1 - .35 licence_bad)

    Review and complaint attacks do not enter: a bombed good merchant stays good.

    Parameters
    ----------
    defect_ratio, nad_ratio, late_ratio, cancel_ratio, response_ratio, unresolved_ratio
        Per-merchant ratios to the benchmark (arrays of equal length).
    rating_gap : np.ndarray
        Base expected rating minus the merchant's expected rating, in stars.
    licence_bad : np.ndarray
        1.0 where the licence is expired or missing in a regulated category, else 0.0.

    Returns
    -------
    np.ndarray
        Scores in [0, 100], higher = better conduct.
    """

    def pen(r: np.ndarray) -> np.ndarray:
        return np.clip(np.log2(np.maximum(r, 1e-9)) / 3.0, 0.0, 1.0)

    return 100.0 * (
        (1 - 0.30 * pen(defect_ratio))
        * (1 - 0.25 * pen(nad_ratio))
        * (1 - 0.20 * np.maximum(pen(late_ratio), pen(cancel_ratio)))
        * (1 - 0.20 * np.maximum(pen(response_ratio), pen(unresolved_ratio)))
        * (1 - 0.15 * np.clip(rating_gap, 0.0, 1.0))
        * (1 - 0.35 * licence_bad)
    )


def generate_marketplace(
    root: Path | str,
    *,
    merchants: int = 500,
    days: int = 60,
    seed: int = 7,
    start: date = date(2026, 1, 1),
    malformed_row_share: float = 0.004,
    malformed_file_share: float = 0.0,
    gb18030_share: float = 0.05,
    show_progress: bool = True,
) -> GenerationSummary:
    """Generate a deterministic synthetic marketplace under ``root``.

    Writes ``landing/<source>/dt=YYYY-MM-DD/*.{csv,csv.gz,jsonl,jsonl.gz,parquet}`` for
    the five contract sources and the hidden truth under ``truth/`` (see the module
    docstring). The same arguments always produce byte-identical files.

    Parameters
    ----------
    root : Path or str
        Storage root; ``landing/`` and ``truth/`` are created below it. ``landing/`` must
        not already hold files (stale files of an earlier run would mix in).
    merchants : int
        Merchants in the registry over the whole period (about 8 % register mid-period).
    days : int
        Business days to generate; the last one is ``start + days - 1``.
    seed : int
        Seed of every random stream.
    start : date
        First business day (the full registry snapshot is delivered on it).
    malformed_row_share : float
        Share of delivered rows replaced by (or, for merchants, accompanied by) a faulty row.
    malformed_file_share : float
        Share of files written corrupt (truncated gzip/parquet, missing required column).
    gb18030_share : float
        Share of reviews/complaints CSV files encoded in GB18030 instead of UTF-8.
    show_progress : bool
        Show a rich progress bar, one step per day.

    Returns
    -------
    GenerationSummary
        Counts of what was written.

    Raises
    ------
    ConfigError
        On out-of-range arguments, or when ``root/landing`` already contains files (exit
        code 2 in the CLI; the message says what to do).
    """
    if merchants < 1 or days < 1:
        raise ConfigError(f"merchants and days must be >= 1, got {merchants} and {days}")
    if merchants > 9_999_999:
        raise ConfigError("at most 9,999,999 merchants (merchant ids are M + 7 digits max)")
    for name, share in (
        ("malformed_row_share", malformed_row_share),
        ("malformed_file_share", malformed_file_share),
        ("gb18030_share", gb18030_share),
    ):
        if not 0.0 <= share <= 1.0:
            raise ConfigError(f"{name} must be within [0, 1], got {share}")
    root = Path(root)
    landing = root / "landing"
    if landing.exists() and any(p.is_file() for p in landing.rglob("*")):
        raise ConfigError(
            f"{landing} already holds files; stale files of another run would mix in",
            hint="generate into an empty --root, or delete its landing/ and truth/ first",
        )
    gen = _Generator(
        root=root,
        n=merchants,
        days=days,
        seed=seed,
        start=start,
        row_share=malformed_row_share,
        file_share=malformed_file_share,
        gb_share=gb18030_share,
    )
    columns = (
        TextColumn("[bold]generate[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, disable=not show_progress) as progress:
        task = progress.add_task(f"{merchants} merchants", total=days)
        for d in gen.run():
            if d >= 0:
                progress.update(task, advance=1, description=f"{start + timedelta(days=d)}")
    summary = GenerationSummary(
        root=root,
        merchants=merchants,
        days=days,
        seed=seed,
        start=start,
        end=start + timedelta(days=days - 1),
        rows_by_source=dict(gen.rows),
        files_by_source=dict(gen.files),
        malformed_rows=gen.malformed_rows,
        malformed_files=gen.malformed_files,
    )
    gen.write_truth(summary)
    return summary


# ----------------------------------------------------------------------------- internals


def _rng(seed: int, stream: int, day: int = 0) -> np.random.Generator:
    """An independent generator per (seed, stream, day): reordering code keeps results."""
    return np.random.Generator(np.random.PCG64([seed, stream, day]))


def _zfill(values: np.ndarray, width: int) -> pl.Series:
    return pl.Series(values, dtype=pl.Int64).cast(pl.String).str.zfill(width)


def _prefixed(prefix: str, values: np.ndarray, width: int) -> pl.Series:
    return pl.select(pl.concat_str([pl.lit(prefix), pl.lit(_zfill(values, width))])).to_series()


def _nullable(values: np.ndarray, valid: np.ndarray) -> pl.Series:
    return pl.select(pl.when(pl.lit(pl.Series(valid))).then(pl.lit(pl.Series(values)))).to_series()


def _cdf(weights: np.ndarray) -> np.ndarray:
    """Row-normalised cumulative distribution of a (n, k) weight matrix."""
    c = np.cumsum(weights, axis=1)
    return c / c[:, -1:]


def _draw(cdf_rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Categorical draw per row from per-row CDFs (inverse transform)."""
    return (u[:, None] >= cdf_rows[:, :-1]).sum(axis=1)


def _hours(rng: np.random.Generator, mean_hours: np.ndarray) -> np.ndarray:
    """Gamma(2) waiting times with the given means, in microseconds, at least a minute
    (so every later version has a strictly later ``updated_at``)."""
    return (rng.gamma(2.0, mean_hours / 2.0) * _HOUR_US).astype(np.int64) + 60_000_000


def _seconds_of_day(rng: np.random.Generator, n: int) -> np.ndarray:
    hours = rng.choice(24, size=n, p=_HOURLY_P)
    return hours * 3600 + rng.integers(0, 3600, size=n)


class _Merchants:
    """The hidden merchant population: archetypes, rates and registry plan."""

    def __init__(self, n: int, days: int, start: date, seed: int) -> None:
        rng = _rng(seed, 0)
        self.n = n
        self.width = max(6, len(str(n - 1)))
        # Exact archetype counts (then shuffled) so that every archetype exists even in
        # small populations and the mix does not drift with the seed.
        counts = {a: round(n * s) for a, s in _ARCHETYPE_SHARE.items()}
        while sum(counts.values()) > n:
            biggest = max(counts, key=lambda a: counts[a])
            counts[biggest] -= 1
        arche = np.concatenate(
            [np.full(n - sum(counts.values()), _GOOD)]
            + [np.full(c, a) for a, c in counts.items()]
        ).astype(np.int64)
        rng.shuffle(arche)
        self.arche = arche
        cat = rng.choice(_N_CAT, size=n, p=np.array([c.weight for c in CATEGORIES]))
        unlic = arche == _UNLIC
        cat[unlic] = rng.choice(_REGULATED, size=int(unlic.sum()))
        self.cat = cat
        self.size = np.minimum(rng.lognormal(_SIZE_MU, _SIZE_SIGMA, size=n), _SIZE_MAX)

        base = {f: np.array([getattr(c, f) for c in CATEGORIES])[cat] for f in
                ("defect", "nad", "late", "cancel", "changed_mind", "price")}
        self.base = base

        def jitter(sigma: float = 0.25) -> np.ndarray:
            return rng.lognormal(0.0, sigma, size=n)

        def mult(mask: np.ndarray, lo: float, hi: float) -> np.ndarray:
            return np.where(mask, rng.uniform(lo, hi, size=n), 1.0)

        poor = (arche == _POOR) | (arche == _BUYER)
        neglect = arche == _NEGLECT
        self.defect = base["defect"] * jitter() * mult(poor, 4.0, 8.0)
        self.nad = base["nad"] * jitter() * mult(arche == _MISLEAD, 5.0, 10.0)
        self.late = np.minimum(base["late"] * jitter() * mult(arche == _LATE, 4.0, 8.0), 0.6)
        self.cancel = np.minimum(
            base["cancel"] * jitter() * mult(arche == _LATE, 3.0, 6.0), 0.3
        )
        self.changed_mind = base["changed_mind"] * jitter(0.2)
        self.price = base["price"] * jitter(0.4)
        # After-sales behaviour.
        good_resp = np.clip(rng.lognormal(np.log(7.0), 0.5, size=n), 1.0, 36.0)
        self.resp_hours = np.where(neglect, rng.uniform(60.0, 200.0, size=n), good_resp)
        self.no_response = np.where(neglect, rng.uniform(0.2, 0.4, size=n), 0.02)
        unres = rng.uniform(0.03, 0.12, size=n)
        unres = np.where(poor | (arche == _MISLEAD), rng.uniform(0.1, 0.2, size=n), unres)
        self.unresolved = np.where(neglect, rng.uniform(0.4, 0.7, size=n), unres)
        self.resolve_hours = np.where(
            neglect, rng.uniform(150.0, 400.0, size=n), rng.uniform(24.0, 72.0, size=n)
        )
        self.return_reject = np.where(
            neglect,
            rng.uniform(0.3, 0.5, size=n),
            np.where(arche == _MISLEAD, 0.15, 0.05),
        )
        self.return_pending = np.where(neglect, 0.15, 0.01)
        self.decide_hours = np.where(
            neglect, rng.uniform(72.0, 240.0, size=n), rng.uniform(12.0, 48.0, size=n)
        )
        self.refund_hours = np.where(
            neglect, rng.uniform(168.0, 480.0, size=n), rng.uniform(12.0, 72.0, size=n)
        )
        channel_good = np.array([0.70, 0.15, 0.13, 0.015, 0.005])
        channel_bad = np.array([0.55, 0.17, 0.15, 0.10, 0.03])
        self.channel_cdf = _cdf(np.where(neglect[:, None], channel_bad, channel_good))
        self.review_rate = rng.uniform(0.25, 0.35, size=n)
        self.verified = rng.uniform(0.85, 0.97, size=n)
        self.zh_share = rng.uniform(0.45, 0.85, size=n)

        # Ratings: the chance of a negative review rises with every kind of misconduct.
        neglect_bonus = np.where(neglect, 0.06, 0.0)
        self.rating_cdf, self.rating_mean, p_neg = self._ratings(
            self.defect, self.nad, self.late, self.cancel, neglect_bonus
        )
        del p_neg
        self.neg_cdf = _cdf(
            np.stack(
                [
                    2.5 * self.defect,
                    3.0 * self.nad,
                    0.6 * self.late + self.cancel,
                    np.where(neglect, 0.06, 0.005),
                    np.full(n, 0.025),
                ],
                axis=1,
            )
        )
        # Per-order return rates by reason (order of _RETURN_REASONS).
        ret = np.stack(
            [
                0.55 * self.defect,
                0.7 * self.nad,
                0.2 * self.defect + 0.002,
                np.full(n, 0.002),
                self.changed_mind,
                np.full(n, 0.002),
            ],
            axis=1,
        )
        self.return_rate = ret.sum(axis=1)
        self.return_cdf = _cdf(ret)
        # Per-order complaint rates by category (order of _COMPLAINT_CATEGORIES).
        comp = np.stack(
            [
                0.10 * self.defect,
                0.12 * self.nad,
                np.where(neglect, 0.004, 0.0008),
                0.02 * (self.late + self.cancel),
                0.01 * self.defect * np.where(poor, 5.0, 1.0),
                np.full(n, 0.0004),
            ],
            axis=1,
        )
        self.complaint_rate = comp.sum(axis=1)
        self.complaint_cdf = _cdf(comp)

        self._plan_registry(rng, days, start)
        self._names(rng)

    @staticmethod
    def _ratings(
        defect: np.ndarray,
        nad: np.ndarray,
        late: np.ndarray,
        cancel: np.ndarray,
        bonus: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p_neg = np.clip(0.025 + 2.5 * defect + 3.0 * nad + 0.6 * late + cancel + bonus, 0, 0.75)
        p3 = 0.07 + 0.25 * p_neg
        p_pos = 1.0 - p_neg - p3
        probs = np.stack([0.6 * p_neg, 0.4 * p_neg, p3, 0.3 * p_pos, 0.7 * p_pos], axis=1)
        mean = probs @ np.arange(1, 6)
        return _cdf(probs), mean, p_neg

    def _plan_registry(self, rng: np.random.Generator, days: int, start: date) -> None:
        """Registration days, licences and status changes, as per-day event lists."""
        n, arche, cat = self.n, self.arche, self.cat
        self.e0 = (start - _EPOCH).days
        # ~8 % register mid-period; attacked and unlicensed merchants exist from the start
        # so their story plays out inside the window.
        late_ok = ~np.isin(arche, (*_ATTACKED, _UNLIC))
        mid = late_ok & (rng.random(n) < 0.08) & (days > 1)
        reg = -rng.integers(30, 2500, size=n)
        reg[mid] = rng.integers(1, max(days, 2), size=int(mid.sum()))
        self.reg_day = reg
        # Licences (epoch days; -1 = none on file).
        regulated = np.isin(cat, _REGULATED)
        has = regulated | (rng.random(n) < 0.4)
        exp = np.where(mid, reg + 365, rng.integers(5, 500, size=n)) + self.e0
        lic = np.where(has, exp, -1)
        state = np.where(has, "valid", np.where(regulated, "missing", "not_required"))
        state = state.astype(object)
        events: list[tuple[int, int, int, int]] = []  # (day, merchant, kind, value)
        unlic = np.flatnonzero(arche == _UNLIC)
        u = rng.random(unlic.size)
        mid_day = rng.integers(1, max(days, 2), size=unlic.size)
        before = rng.integers(1, 200, size=unlic.size)
        for j, m in enumerate(unlic):
            if u[j] < 0.45:
                lic[m], state[m] = -1, "missing"
            elif u[j] < 0.75 or days < 3:
                lic[m], state[m] = self.e0 - before[j], "expired"
            else:  # valid at first, expires mid-period and is never renewed
                lic[m], state[m] = self.e0 + mid_day[j], "expired"
        # Everyone else renews shortly before expiry, delivered as a changed registry row.
        renew_u = rng.random(n)
        ok = np.flatnonzero((lic >= 0) & (arche != _UNLIC))
        for m in ok:
            exp_day = int(lic[m]) - self.e0
            if exp_day <= days - 1:
                # Renewed 1-29 days ahead of expiry, never before day 1 (the snapshot).
                window = max(1, min(29, exp_day - 1))
                day = max(1, exp_day - 1 - int(renew_u[m] * window), int(reg[m]) + 1)
                if day < days:
                    events.append((day, int(m), 1, int(lic[m]) + 730))
                else:
                    state[m] = "expired"
        self.licence0 = lic
        self.licence_state = state
        # Status changes: suspensions (half reinstated) and closures; misconduct makes
        # enforcement more likely. Attacked merchants keep trading so the attack is visible.
        if days > 2:
            eligible = ~np.isin(arche, _ATTACKED)
            weight = np.where(np.isin(arche, tuple(_BAD_DIMENSION)), 3.0, 1.0)
            u = rng.random(n)
            susp = eligible & (u < 0.012 * weight)
            close = eligible & ~susp & (rng.random(n) < 0.01)
            s_day = np.maximum(rng.integers(1, days, size=n), reg + 1)
            back = s_day + rng.integers(3, 22, size=n)
            reinstate = rng.random(n) < 0.5
            for m in np.flatnonzero((susp | close) & (s_day < days)):
                events.append((int(s_day[m]), int(m), 2, 2 if close[m] else 1))
                if susp[m] and reinstate[m] and back[m] < days:
                    events.append((int(back[m]), int(m), 2, 0))
        for m in np.flatnonzero(mid):
            events.append((int(reg[m]), int(m), 0, 0))
        events.sort()
        self.events: dict[int, list[tuple[int, int, int]]] = {}
        for day, idx, kind, value in events:
            self.events.setdefault(day, []).append((idx, kind, value))

    def _names(self, rng: np.random.Generator) -> None:
        n = self.n
        lang = (rng.random(n) >= 0.5).astype(np.int64)
        prefix = _Pool(((_NAME_PREFIX[0], _NAME_PREFIX[1]),)).pick(
            np.zeros(n, dtype=np.int64), lang, rng.random(n)
        )
        suffix = _Pool(((_NAME_SUFFIX[0], _NAME_SUFFIX[1]),)).pick(
            np.zeros(n, dtype=np.int64), lang, rng.random(n)
        )
        cat_word = pl.Series(
            [c.zh for c in CATEGORIES] + [" " + c.en for c in CATEGORIES]
        ).gather(self.cat + lang * _N_CAT)
        self.names = pl.DataFrame({"p": prefix, "c": cat_word, "s": suffix}).select(
            pl.concat_str(["p", "c", "s"])
        ).to_series()
        self.ids = _prefixed("M", np.arange(n), self.width)
        self.cat_names = pl.Series([c.name for c in CATEGORIES]).gather(self.cat)

    def truth(self) -> pl.DataFrame:
        """The hidden truth table (see the module docstring)."""
        arche = self.arche
        base_mean = self._ratings(
            self.base["defect"], self.base["nad"], self.base["late"], self.base["cancel"],
            np.zeros(self.n),
        )[1]
        licence_bad = np.isin(self.licence_state, ("expired", "missing")).astype(float)
        score = conduct_score(
            defect_ratio=self.defect / self.base["defect"],
            nad_ratio=self.nad / self.base["nad"],
            late_ratio=self.late / self.base["late"],
            cancel_ratio=self.cancel / self.base["cancel"],
            response_ratio=self.resp_hours / _BASE_RESPONSE_HOURS,
            unresolved_ratio=self.unresolved / _BASE_UNRESOLVED,
            rating_gap=base_mean - self.rating_mean,
            licence_bad=licence_bad,
        )
        return pl.DataFrame(
            {
                "merchant_id": self.ids,
                "name": self.names,
                "category": self.cat_names,
                "archetype": pl.Series(ARCHETYPES).gather(arche),
                "size": self.size,
                "registered_on": pl.Series(self.reg_day + self.e0, dtype=pl.Int32).cast(pl.Date),
                "true_defect_rate": self.defect,
                "true_nad_rate": self.nad,
                "true_late_rate": self.late,
                "true_cancel_rate": self.cancel,
                "true_response_hours": self.resp_hours,
                "true_unresolved_rate": self.unresolved,
                "true_rating_mean": self.rating_mean,
                "licence_state": pl.Series(self.licence_state.tolist(), dtype=pl.String),
                "is_bad": np.isin(arche, tuple(_BAD_DIMENSION)),
                "bad_dimension": pl.Series(
                    [_BAD_DIMENSION.get(int(a)) for a in arche], dtype=pl.String
                ),
                "true_conduct_score": np.round(score, 3),
            }
        )


@dataclass
class _Attack:
    merchant: int
    kind: int  # 0 review_campaign, 1 review_bombing, 2 collective_complaint
    start: int
    end: int
    n_events: int
    template: int
    lang: int
    category: int
    hour: int


_ATTACK_KINDS: Final = ("review_campaign", "review_bombing", "collective_complaint")


def _plan_attacks(m: _Merchants, days: int, seed: int) -> list[_Attack]:
    """Bursts: bought 5-star campaigns, 1-star bombing, collective complaint surges."""
    rng = _rng(seed, 1)
    attacks: list[_Attack] = []
    for idx in np.flatnonzero(np.isin(m.arche, _ATTACKED)):
        a = int(m.arche[idx])
        if a == _BUYER:
            plan = [(0, 1 + int(rng.random() < 0.5))]
        elif a == _BOMBED:
            plan = [(1, 1)]
        else:
            plan = [(2, 1)]
        for kind, count in plan:
            for _ in range(count):
                dur = min(days, int(rng.integers(2, 5 if kind < 2 else 6)))
                # Collective disputes come late in the period (a fresh surge); review
                # attacks anywhere after the first few days.
                lo = max(0, days - max(days // 3, dur)) if kind == 2 else min(days // 5, days - dur)
                s = int(rng.integers(lo, days - dur + 1))
                if kind < 2:
                    n_ev = 25 + int(rng.poisson(20)) + int(m.size[idx] * 0.5 * dur)
                else:
                    n_ev = 15 + int(rng.poisson(15)) + int(m.size[idx] * 0.05 * dur)
                attacks.append(
                    _Attack(
                        merchant=int(idx),
                        kind=kind,
                        start=s,
                        end=s + dur - 1,
                        n_events=n_ev,
                        template=int(rng.integers(0, 3)),
                        lang=int(rng.random() >= m.zh_share[idx]),
                        category=int(rng.choice([0, 1, 2, 4])),
                        hour=int(rng.integers(0, 20)),
                    )
                )
    return attacks


class _Generator:
    """Day-by-day simulation with a delivery buffer and file writer."""

    def __init__(
        self,
        *,
        root: Path,
        n: int,
        days: int,
        seed: int,
        start: date,
        row_share: float,
        file_share: float,
        gb_share: float,
    ) -> None:
        self.root = root
        self.days = days
        self.seed = seed
        self.start = start
        self.row_share = row_share
        self.file_share = file_share
        self.gb_share = gb_share
        self.m = _Merchants(n, days, start, seed)
        self.e0 = self.m.e0
        self.attacks = _plan_attacks(self.m, days, seed)
        self._attack_days = self._expand_attacks()
        # A realistic buyer pool (repeat buyers) plus brand-new ids handed out in order.
        self.pool = max(5000, 30 * n)
        self.new_ids = 0
        self.counters = {"reviews": 0, "complaints": 0, "returns": 0}
        self.pending: dict[int, dict[str, list[pl.DataFrame]]] = {}
        self.fmt_counter = dict.fromkeys(SOURCES, 0)
        self.rows = dict.fromkeys(SOURCES, 0)
        self.files = dict.fromkeys(SOURCES, 0)
        self.malformed: list[dict[str, object]] = []
        self.file_log: list[dict[str, object]] = []
        self.gb_eligible = 0
        self.malformed_rows = 0
        self.malformed_files = 0
        self.status = np.zeros(n, dtype=np.int8)
        self.licence = self.m.licence0.copy()

    # ---------------------------------------------------------------- orchestration

    def run(self) -> Iterator[int]:
        """Simulate warm-up and business days; yield each finished day index."""
        for d in range(-_WARMUP_DAYS, self.days):
            rng = _rng(self.seed, 2, d + _WARMUP_DAYS)
            if d >= 0:
                self._registry(d)
            active = np.flatnonzero((self.m.reg_day <= d) & (self.status == 0))
            orders, late, cancel = self._orders(rng, d, active)
            if d >= 0:
                self._sales(d, active, orders, late, cancel)
            keep = orders > 0
            self._reviews(rng, d, active[keep], orders[keep])
            self._returns(rng, d, active[keep], orders[keep])
            self._complaints(rng, d, active[keep], orders[keep])
            if d >= 0:
                self._attack_events(rng, d)
                self._deliver(d)
            yield d

    def _push(self, source: str, frame: pl.DataFrame, event_us: np.ndarray,
              rng: np.random.Generator) -> None:
        """Queue rows for delivery on their event day or (sometimes) the day after."""
        day = event_us // _DAY_US - self.e0
        delay = (rng.random(day.size) < _NEXT_DAY_SHARE).astype(np.int64)
        # Versions happening after the last day have not happened yet: drop them. Rows
        # due the day after the last day are delivered on the last day (still >= event).
        keep = (day >= 0) & (day < self.days)
        dlv = np.minimum(day + delay, self.days - 1)
        frame = frame.with_columns(_dlv=pl.Series(dlv)).filter(pl.Series(keep))
        cols = [pl.col(c).cast(_INTERNAL[k]) for c, k in _COLUMNS[source]]
        frame = frame.select([*cols, pl.col("_dlv")])
        for (key,), part in frame.partition_by(
            "_dlv", as_dict=True, maintain_order=True, include_key=False
        ).items():
            self.pending.setdefault(int(key), {}).setdefault(source, []).append(part)

    # ---------------------------------------------------------------- sources

    def _registry(self, d: int) -> None:
        m = self.m
        if d == 0:
            changed = np.flatnonzero(m.reg_day <= 0)
        else:
            touched = []
            for idx, kind, value in m.events.get(d, ()):
                if kind == 1:
                    self.licence[idx] = value
                elif kind == 2:
                    self.status[idx] = value
                touched.append(idx)
            changed = np.unique(np.array(touched, dtype=np.int64))
        if changed.size == 0:
            return
        lic = self.licence[changed]
        frame = pl.DataFrame(
            {
                "merchant_id": m.ids.gather(changed),
                "name": m.names.gather(changed),
                "category": m.cat_names.gather(changed),
                "registered_on": pl.Series(m.reg_day[changed] + self.e0, dtype=pl.Int32),
                "license_expires_on": _nullable(lic, lic >= 0).cast(pl.Int32),
                "status": pl.Series(_MERCHANT_STATUS).gather(self.status[changed]),
            }
        )
        self.pending.setdefault(d, {}).setdefault("merchants", []).append(frame)

    def _orders(
        self, rng: np.random.Generator, d: int, active: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m = self.m
        wd = _WEEKDAY[(self.start + timedelta(days=d)).weekday()]
        lam = m.size[active] * wd * rng.gamma(8.0, 1 / 8.0, size=active.size)
        orders = rng.poisson(lam)
        cancel = rng.binomial(orders, m.cancel[active])
        late = rng.binomial(orders - cancel, m.late[active])
        return orders, late, cancel

    def _sales(
        self, d: int, active: np.ndarray, orders: np.ndarray, late: np.ndarray,
        cancel: np.ndarray
    ) -> None:
        frame = pl.DataFrame(
            {
                "merchant_id": self.m.ids.gather(active),
                "date": pl.Series(np.full(active.size, self.e0 + d), dtype=pl.Int32),
                "orders": orders,
                "late_shipments": late,
                "cancellations": cancel,
            }
        )
        self.pending.setdefault(d, {}).setdefault("sales", []).append(frame)

    def _order_ids(self, d: int, mi: np.ndarray, seq: np.ndarray) -> pl.Series:
        day = self.start + timedelta(days=d)
        return pl.select(
            pl.concat_str(
                [
                    pl.lit(f"O{day:%Y%m%d}-"),
                    pl.lit(_zfill(mi, self.m.width)),
                    pl.lit("-"),
                    pl.lit(_zfill(seq, 6)),
                ]
            )
        ).to_series()

    def _buyers(self, rng: np.random.Generator, n: int, new: bool = False) -> pl.Series:
        """Buyer ids ``u`` + 9 digits: skewed draws from the pool, or brand-new ids."""
        if new:
            idx = self.pool + self.new_ids + np.arange(n, dtype=np.int64)
            self.new_ids += n
        else:
            idx = (self.pool * rng.random(n) ** 1.6).astype(np.int64)
        # An affine bijection mod 10^9 scatters sequential indices over 9-digit numbers.
        digits = (idx * 387_420_489 + 123_456_789) % 1_000_000_000
        return _prefixed("u", digits, 9)

    def _ids(self, source: str, prefix: str, n: int) -> pl.Series:
        first = self.counters[source]
        self.counters[source] += n
        return _prefixed(prefix, np.arange(first, first + n), 10)

    def _expand(
        self, rng: np.random.Generator, active: np.ndarray, orders: np.ndarray, rate: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Events drawn per order: merchant index and order sequence per event."""
        k = rng.binomial(orders, np.minimum(rate[active], 1.0))
        mi = np.repeat(active, k)
        seq = (rng.random(mi.size) * np.repeat(orders, k)).astype(np.int64)
        return mi, seq

    def _reviews(
        self, rng: np.random.Generator, d: int, active: np.ndarray, orders: np.ndarray
    ) -> None:
        m = self.m
        mi, seq = self._expand(rng, active, orders, m.review_rate)
        n = mi.size
        if n == 0:
            return
        lag = rng.choice(_REVIEW_LAG_P.size, size=n, p=_REVIEW_LAG_P)
        ts = ((self.e0 + d + lag) * 86_400 + _seconds_of_day(rng, n)) * 1_000_000
        rating = 1 + _draw(m.rating_cdf[mi], rng.random(n))
        negative = 2 + _draw(m.neg_cdf[mi], rng.random(n))
        kind = np.where(rating >= 4, _R_POS, np.where(rating == 3, _R_NEU, negative))
        text = self._text(rng, _REVIEW_POOL, kind, mi, extra_p=0.15, null_p=0.15)
        frame = pl.DataFrame(
            {
                "review_id": self._ids("reviews", "RV", n),
                "merchant_id": m.ids.gather(mi),
                "order_id": self._order_ids(d, mi, seq),
                "reviewer_id": self._buyers(rng, n),
                "rating": rating,
                "text": text,
                "created_at": ts,
                "verified_purchase": rng.random(n) < m.verified[mi],
            }
        )
        self._push("reviews", frame, ts, rng)

    def _text(
        self,
        rng: np.random.Generator,
        pool: _Pool,
        kind: np.ndarray,
        mi: np.ndarray,
        *,
        extra_p: float,
        null_p: float,
        u_tpl: np.ndarray | None = None,
    ) -> pl.Series:
        """Template text per row in the buyer's language (Chinese or English)."""
        n = mi.size
        lang = (rng.random(n) >= self.m.zh_share[mi]).astype(np.int64)
        u = rng.random(n)
        tpl = pool.pick(kind, lang, u if u_tpl is None else u_tpl)
        item = _ITEM_POOL.pick(self.m.cat[mi], lang, rng.random(n))
        # Extra member 0 is "", so (1 - extra_p) of rows get no extra.
        u = np.where(rng.random(n) < extra_p, rng.random(n), 0.0)
        extra = _EXTRA_POOL.pick(np.zeros(n, dtype=np.int64), lang, u)
        return _render(tpl, item, extra, rng.random(n) < null_p)

    def _returns(
        self, rng: np.random.Generator, d: int, active: np.ndarray, orders: np.ndarray
    ) -> None:
        m = self.m
        mi, seq = self._expand(rng, active, orders, m.return_rate)
        n = mi.size
        if n == 0:
            return
        lag = rng.choice(_RETURN_LAG_P.size, size=n, p=_RETURN_LAG_P)
        t0 = ((self.e0 + d + lag) * 86_400 + _seconds_of_day(rng, n)) * 1_000_000
        reason = _draw(m.return_cdf[mi], rng.random(n))
        pending = rng.random(n) < m.return_pending[mi]
        # Changed-mind returns are refused more often than defects.
        p_rej = m.return_reject[mi] * np.where(reason == 4, 1.5, 1.0)
        rejected = ~pending & (rng.random(n) < p_rej)
        approved = ~pending & ~rejected
        t1 = t0 + _hours(rng, m.decide_hours[mi])
        t2 = t1 + _hours(rng, m.refund_hours[mi])
        t0, t1, t2 = (t // 1_000_000 * 1_000_000 for t in (t0, t1, t2))
        share = np.where(rng.random(n) < 0.15, 0.5, 1.0)
        amount = np.round(m.price[mi] * rng.lognormal(0.0, 0.5, size=n) * share, 2)
        base = pl.DataFrame(
            {
                "return_id": self._ids("returns", "RT", n),
                "merchant_id": m.ids.gather(mi),
                "order_id": self._order_ids(d, mi, seq),
                "requested_at": t0,
                "reason": pl.Series(_RETURN_REASONS).gather(reason),
            }
        )
        null_ts = pl.lit(None, dtype=pl.Int64)
        v1 = base.with_columns(
            status=pl.lit("requested"),
            refund_amount=pl.lit(None, dtype=pl.Float64),
            resolved_at=null_ts,
            updated_at=pl.Series(t0),
        )
        decided = ~pending
        v2 = base.filter(pl.Series(decided)).with_columns(
            status=pl.Series(np.where(rejected, "rejected", "approved")[decided]),
            refund_amount=pl.lit(None, dtype=pl.Float64),
            resolved_at=_nullable(t1[decided], rejected[decided]),
            updated_at=pl.Series(t1[decided]),
        )
        v3 = base.filter(pl.Series(approved)).with_columns(
            status=pl.lit("refunded"),
            refund_amount=pl.Series(amount[approved]),
            resolved_at=pl.Series(t2[approved]),
            updated_at=pl.Series(t2[approved]),
        )
        frame = pl.concat([v1, v2, v3], how="vertical")
        upd = np.concatenate([t0, t1[decided], t2[approved]])
        self._push("returns", frame, upd, rng)

    def _complaints(
        self, rng: np.random.Generator, d: int, active: np.ndarray, orders: np.ndarray
    ) -> None:
        m = self.m
        mi, seq = self._expand(rng, active, orders, m.complaint_rate)
        n = mi.size
        if n == 0:
            return
        lag = rng.choice(_COMPLAINT_LAG_P.size, size=n, p=_COMPLAINT_LAG_P / _COMPLAINT_LAG_P.sum())
        t0 = ((self.e0 + d + lag) * 86_400 + _seconds_of_day(rng, n)) * 1_000_000
        category = _draw(m.complaint_cdf[mi], rng.random(n))
        order_id = self._order_ids(d, mi, seq)
        order_id = pl.select(
            pl.when(pl.lit(pl.Series(rng.random(n) < 0.85))).then(pl.lit(order_id))
        ).to_series()
        self._complaint_versions(
            rng, mi=mi, t0=t0, category=category, order_id=order_id,
            complainant=self._buyers(rng, n),
            text=self._text(rng, _COMPLAINT_POOL, category, mi, extra_p=0.25, null_p=0.05),
        )

    def _complaint_versions(
        self,
        rng: np.random.Generator,
        *,
        mi: np.ndarray,
        t0: np.ndarray,
        category: np.ndarray,
        order_id: pl.Series,
        complainant: pl.Series,
        text: pl.Series,
    ) -> None:
        """Lifecycle open -> (first response) -> resolved/rejected/escalated, one row per
        state change with increasing ``updated_at``; still-open ones stay open."""
        m = self.m
        n = mi.size
        channel = _draw(m.channel_cdf[mi], rng.random(n))
        responded = rng.random(n) >= m.no_response[mi]
        t1 = t0 + _hours(rng, m.resp_hours[mi])
        u = rng.random(n)
        unres = m.unresolved[mi]
        # 0 open forever, 1 resolved, 2 rejected, 3 escalated
        outcome = np.where(
            u >= unres, 1, np.where(u < 0.4 * unres, 2, np.where(u < 0.7 * unres, 3, 0))
        )
        after = np.where(responded, t1, t0)
        t2 = after + _hours(rng, m.resolve_hours[mi])
        t0, t1, t2 = (t // 1_000_000 * 1_000_000 for t in (t0, t1, t2))
        ids = self._ids("complaints", "CP", n)
        base = pl.DataFrame(
            {
                "complaint_id": ids,
                "merchant_id": m.ids.gather(mi),
                "order_id": order_id,
                "complainant_id": complainant,
                "category": pl.Series(_COMPLAINT_CATEGORIES).gather(category),
                "channel": pl.Series(_CHANNELS).gather(channel),
                "opened_at": t0,
                "text": text,
            }
        )
        null_ts = pl.lit(None, dtype=pl.Int64)
        v1 = base.with_columns(
            first_response_at=null_ts, resolved_at=null_ts, status=pl.lit("open"),
            updated_at=pl.Series(t0),
        )
        v2 = base.filter(pl.Series(responded)).with_columns(
            first_response_at=pl.Series(t1[responded]), resolved_at=null_ts,
            status=pl.lit("open"), updated_at=pl.Series(t1[responded]),
        )
        final = outcome > 0
        closed = (outcome == 1) | (outcome == 2)
        # A resolution without an earlier reply counts as the first response.
        fr = np.where(responded, t1, t2)
        fr_valid = responded | closed
        v3 = base.filter(pl.Series(final)).with_columns(
            first_response_at=_nullable(fr[final], fr_valid[final]),
            resolved_at=_nullable(t2[final], closed[final]),
            status=pl.Series(_COMPLAINT_STATUS).gather(outcome[final]),
            updated_at=pl.Series(t2[final]),
        )
        frame = pl.concat([v1, v2, v3], how="diagonal")
        upd = np.concatenate([t0, t1[responded], t2[final]])
        self._push("complaints", frame, upd, rng)

    def _expand_attacks(self) -> dict[int, list[tuple[_Attack, int]]]:
        """Split each attack's events over its days (multinomial), indexed by day."""
        rng = _rng(self.seed, 3)
        by_day: dict[int, list[tuple[_Attack, int]]] = {}
        for a in self.attacks:
            dur = a.end - a.start + 1
            counts = rng.multinomial(a.n_events, np.full(dur, 1.0 / dur))
            for k, c in enumerate(counts):
                if c:
                    by_day.setdefault(a.start + k, []).append((a, int(c)))
        return by_day

    def _attack_events(self, rng: np.random.Generator, d: int) -> None:
        todays = self._attack_days.get(d, [])
        reviews = [(a, c) for a, c in todays if a.kind < 2]
        complaints = [(a, c) for a, c in todays if a.kind == 2]
        m = self.m
        if reviews:
            counts = np.array([c for _, c in reviews])
            mi = np.repeat([a.merchant for a, _ in reviews], counts)
            kind = np.repeat([a.kind for a, _ in reviews], counts)
            tpl = np.repeat([a.template for a, _ in reviews], counts)
            lang = np.repeat([a.lang for a, _ in reviews], counts)
            hour = np.repeat([a.hour for a, _ in reviews], counts)
            n = mi.size
            # Bought/bombing reviews cluster in a few hours of the day.
            ts = ((self.e0 + d) * 86_400 + hour * 3600 + rng.integers(0, 4 * 3600, size=n))
            ts = ts * 1_000_000
            stars = np.where(kind == 0, np.where(rng.random(n) < 0.92, 5, 4),
                             np.where(rng.random(n) < 0.92, 1, 2))
            base_tpl = _ATTACK_POOL.pick(kind, lang, (tpl + 0.5) / 3.0)
            variant = _EXTRA_POOL.pick(np.ones(n, dtype=np.int64), lang, rng.random(n))
            text = _render(base_tpl, base_tpl, variant, rng.random(n) < 0.05)
            frame = pl.DataFrame(
                {
                    "review_id": self._ids("reviews", "RV", n),
                    "merchant_id": m.ids.gather(mi),
                    "order_id": pl.Series([None] * n, dtype=pl.String),
                    "reviewer_id": self._buyers(rng, n, new=True),
                    "rating": stars,
                    "text": text,
                    "created_at": ts,
                    "verified_purchase": np.zeros(n, dtype=bool),
                }
            )
            self._push("reviews", frame, ts, rng)
        if complaints:
            counts = np.array([c for _, c in complaints])
            mi = np.repeat([a.merchant for a, _ in complaints], counts)
            cat = np.repeat([a.category for a, _ in complaints], counts)
            hour = np.repeat([a.hour for a, _ in complaints], counts)
            n = mi.size
            ts = ((self.e0 + d) * 86_400 + hour * 3600 + rng.integers(0, 4 * 3600, size=n))
            ts = ts * 1_000_000
            seq = rng.integers(0, np.maximum(1, np.round(m.size[mi] * 3).astype(np.int64)))
            order_id = self._order_ids(max(d - 2, 0), mi, seq)
            order_id = pl.select(
                pl.when(pl.lit(pl.Series(rng.random(n) < 0.7))).then(pl.lit(order_id))
            ).to_series()
            # Most surge complaints reuse one wording (a shared script), some are own words.
            fixed = np.repeat([(a.template + 0.5) / 3.0 for a, _ in complaints], counts)
            u_tpl = np.where(rng.random(n) < 0.7, fixed, rng.random(n))
            text = self._text(rng, _COMPLAINT_POOL, cat, mi, extra_p=0.3, null_p=0.03,
                              u_tpl=u_tpl)
            self._complaint_versions(
                rng, mi=mi, t0=ts, category=cat, order_id=order_id,
                complainant=self._buyers(rng, n, new=True), text=text,
            )

    # ---------------------------------------------------------------- delivery

    def _deliver(self, d: int) -> None:
        due = self.pending.pop(d, {})
        frng = _rng(self.seed, 4, d)  # file layout: splits, formats, BOM, timestamp style
        irng = _rng(self.seed, 5, d)  # faults: a different share leaves the layout alone
        dt = self.start + timedelta(days=d)
        for s_idx, source in enumerate(SOURCES):
            frames = due.get(source)
            if not frames:
                continue
            frame = pl.concat(frames, how="vertical").sort(_SORT_KEY[source], maintain_order=True)
            n = frame.height
            n_files = int(frng.integers(1, 4)) if n >= 3 else 1
            cuts = np.sort(frng.choice(np.arange(1, n), size=n_files - 1, replace=False)) \
                if n_files > 1 else np.array([], dtype=np.int64)
            bounds = [0, *cuts.tolist(), n]
            for k in range(n_files):
                part = frame.slice(bounds[k], bounds[k + 1] - bounds[k])
                fmt = FORMATS[(self.fmt_counter[source] + 2 * s_idx) % len(FORMATS)]
                self.fmt_counter[source] += 1
                self._write_file(
                    frng, irng, source=source, d=d, dt=dt, k=k, frame=part, fmt=fmt
                )

    def _write_file(
        self,
        rng: np.random.Generator,
        irng: np.random.Generator,
        *,
        source: str,
        d: int,
        dt: date,
        k: int,
        frame: pl.DataFrame,
        fmt: str,
    ) -> None:
        folder = self.root / "landing" / source / f"dt={dt:%Y-%m-%d}"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{source}_{dt:%Y%m%d}_{k + 1:02d}.{fmt}"
        rel = f"landing/{source}/dt={dt:%Y-%m-%d}/{name}"
        # Draw every per-file decision up front so each file uses a fixed number of draws.
        u_file_fault, u_bom, u_style = rng.random(3)
        file_fault = (
            u_file_fault < self.file_share and not (source == "merchants" and d == 0)
        )
        text_fmt = not fmt.startswith("parquet")
        faults: list[tuple[int, str]] = []
        nan_rows: list[int] = []
        if not file_fault and self.row_share > 0:
            frame, faults, nan_rows = _inject_rows(
                irng, source=source, frame=frame, dt_epoch=d + self.e0, text_fmt=text_fmt,
                share=self.row_share,
            )
        self.rows[source] += frame.height
        self.files[source] += 1
        style = int(u_style * len(_STYLES))
        if text_fmt:
            out = _as_text(frame, source, style, rng)
            out = _inject_text(irng, source, out, faults)
        else:
            out = frame
        fault_kind = None
        if file_fault:
            fault_kind, out = _file_fault(source, fmt, out)
        gb18030 = False
        if source in ("reviews", "complaints") and fmt.startswith("csv"):
            # Evenly spaced rather than random: the share holds exactly even in tiny runs.
            slot = self.gb_eligible
            self.gb_eligible += 1
            gb18030 = int((slot + 1) * self.gb_share + 0.5) > int(slot * self.gb_share + 0.5)
        bom = bool(u_bom < 0.2) and fmt.startswith("csv") and not gb18030
        data = _serialise(out, source, fmt, gb18030=gb18030, bom=bom, nan_rows=nan_rows)
        if fault_kind is not None and fault_kind.startswith("truncated"):
            data = data[: max(1, len(data) // 2)]
        (folder / name).write_bytes(data)
        self.file_log.append(
            {
                "source": source,
                "dt": dt,
                "file": rel,
                "format": fmt,
                "encoding": "gb18030" if gb18030 else "utf-8",
                "bom": bom,
                "timestamp_style": _STYLES[style] if text_fmt else "parquet",
                "rows": frame.height,
                "fault": fault_kind,
            }
        )
        if fault_kind is not None:
            self.malformed_files += 1
            self.malformed.append(
                {"source": source, "dt": dt, "file": rel, "row_number": None, "kind": fault_kind}
            )
        for row, kind in faults:
            self.malformed_rows += 1
            self.malformed.append(
                {"source": source, "dt": dt, "file": rel, "row_number": row + 1, "kind": kind}
            )

    # ---------------------------------------------------------------- truth

    def write_truth(self, summary: GenerationSummary) -> None:
        truth = self.root / "truth"
        truth.mkdir(parents=True, exist_ok=True)
        _write_parquet(self.m.truth(), truth / "merchants.parquet")
        attacks = pl.DataFrame(
            {
                "merchant_id": self.m.ids.gather([a.merchant for a in self.attacks]),
                "kind": [_ATTACK_KINDS[a.kind] for a in self.attacks],
                "start": [self.start + timedelta(days=a.start) for a in self.attacks],
                "end": [self.start + timedelta(days=a.end) for a in self.attacks],
                "n_events": [a.n_events for a in self.attacks],
                "complaint_category": [
                    _COMPLAINT_CATEGORIES[a.category] if a.kind == 2 else None
                    for a in self.attacks
                ],
            },
            schema={"merchant_id": pl.String, "kind": pl.String, "start": pl.Date,
                    "end": pl.Date, "n_events": pl.Int64, "complaint_category": pl.String},
        )
        _write_parquet(attacks, truth / "attacks.parquet")
        malformed = pl.DataFrame(
            self.malformed,
            schema={"source": pl.String, "dt": pl.Date, "file": pl.String,
                    "row_number": pl.Int64, "kind": pl.String},
            orient="row",
        )
        _write_parquet(malformed, truth / "malformed.parquet")
        files = pl.DataFrame(
            self.file_log,
            schema={"source": pl.String, "dt": pl.Date, "file": pl.String, "format": pl.String,
                    "encoding": pl.String, "bom": pl.Boolean, "timestamp_style": pl.String,
                    "rows": pl.Int64, "fault": pl.String},
            orient="row",
        )
        _write_parquet(files, truth / "files.parquet")
        meta = asdict(summary)
        meta.update(root=None, start=str(summary.start), end=str(summary.end),
                    malformed_row_share=self.row_share, malformed_file_share=self.file_share,
                    gb18030_share=self.gb_share)
        (truth / "generation.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------- faults

_ILLEGAL_IDS: Final = ("m 01!", "M0001 2", "M#000123", "商户0001", "M00012/7", "x" * 65)
_BAD_TS: Final = ("2026-13-45T99:00", "not a date", "2026-02-30T25:61:00Z", "31/01/2026 10:00")
_BAD_DATES: Final = ("2026-13-45", "yesterday", "2026/02/30", "31.01.2026")
# Row-level fault kinds per source; the flag marks kinds only a text file can carry.
_ROW_FAULTS: Final[dict[str, tuple[tuple[str, bool], ...]]] = {
    "merchants": (("illegal_merchant_id", False), ("empty_required", False),
                  ("unknown_status", False), ("registered_in_future", False),
                  ("unparseable_date", True)),
    "sales": (("negative_orders", False), ("late_exceeds_orders", False),
              ("illegal_merchant_id", False), ("unknown_merchant", False),
              ("empty_required", False), ("unparseable_date", True)),
    "reviews": (("rating_out_of_range", False), ("created_after_delivery", False),
                ("illegal_merchant_id", False), ("unknown_merchant", False),
                ("empty_required", False), ("text_too_long", False),
                ("unparseable_timestamp", True)),
    "complaints": (("unknown_category", False), ("unknown_status", False),
                   ("first_response_before_opened", False), ("illegal_merchant_id", False),
                   ("unknown_merchant", False), ("empty_required", False),
                   ("text_too_long", False), ("unparseable_timestamp", True)),
    "returns": (("unknown_reason", False), ("unknown_status", False), ("refund_nan", False),
                ("illegal_merchant_id", False), ("unknown_merchant", False),
                ("empty_required", False), ("unparseable_timestamp", True)),
}
_REQUIRED_FOR_EMPTY: Final = {
    "merchants": "name", "sales": "merchant_id", "reviews": "reviewer_id",
    "complaints": "complainant_id", "returns": "order_id",
}
_TS_FOR_BAD: Final = {"reviews": "created_at", "complaints": "opened_at",
                      "returns": "requested_at"}
_DATE_FOR_BAD: Final = {"merchants": "registered_on", "sales": "date"}
_UNKNOWN: Final = {
    ("complaints", "category"): ("service", "refund", "scam", "质量问题", "Quality"),
    ("complaints", "status"): ("closed", "pending", "in_progress", "已解决"),
    ("returns", "reason"): ("size", "defective", "no_reason", "质量问题"),
    ("returns", "status"): ("cancelled", "processing", "done"),
    ("merchants", "status"): ("deleted", "frozen", "pending_review"),
}
# Columns dropped to make "missing required column" files.
_DROP_FOR_FAULT: Final = {"merchants": "status", "sales": "orders", "reviews": "rating",
                          "complaints": "opened_at", "returns": "reason"}


def _inject_rows(
    rng: np.random.Generator,
    *,
    source: str,
    frame: pl.DataFrame,
    dt_epoch: int,
    text_fmt: bool,
    share: float,
) -> tuple[pl.DataFrame, list[tuple[int, str]], list[int]]:
    """Corrupt a few rows in place (merchants: append corrupted copies instead, so the
    registry itself stays complete). Returns the frame, ``(row, kind)`` faults and the rows
    whose refund must be written as NaN in JSON (Polars writes NaN as null there)."""
    n = frame.height
    k = int(rng.binomial(n, share)) if n else 0
    if k == 0:
        return frame, [], []
    kinds = [kd for kd, text_only in _ROW_FAULTS[source] if text_fmt or not text_only]
    chosen = np.sort(rng.choice(n, size=k, replace=False))
    picks = rng.integers(0, len(kinds), size=k)
    if source == "merchants":
        frame = pl.concat([frame, frame[chosen.tolist()]], how="vertical")
        rows = np.arange(n, n + k)
    else:
        rows = chosen
    updates: dict[str, tuple[list[int], list[object]]] = {}

    def put(col: str, row: int, value: object) -> None:
        updates.setdefault(col, ([], []))
        updates[col][0].append(row)
        updates[col][1].append(value)

    faults: list[tuple[int, str]] = []
    nan_rows: list[int] = []
    for row, p in zip(rows.tolist(), picks.tolist(), strict=True):
        kind = kinds[p]
        faults.append((row, kind))
        r = rng.random()
        if kind == "illegal_merchant_id":
            put("merchant_id", row, _ILLEGAL_IDS[int(r * len(_ILLEGAL_IDS))])
        elif kind == "unknown_merchant":
            put("merchant_id", row, f"M9{int(r * 1_000_000):06d}")
        elif kind == "empty_required":
            put(_REQUIRED_FOR_EMPTY[source], row, None)
        elif kind == "unknown_status":
            vals = _UNKNOWN[(source, "status")]
            put("status", row, vals[int(r * len(vals))])
        elif kind == "unknown_category":
            vals = _UNKNOWN[(source, "category")]
            put("category", row, vals[int(r * len(vals))])
        elif kind == "unknown_reason":
            vals = _UNKNOWN[(source, "reason")]
            put("reason", row, vals[int(r * len(vals))])
        elif kind == "registered_in_future":
            put("registered_on", row, dt_epoch + 10 + int(r * 400))
        elif kind == "negative_orders":
            put("orders", row, -1 - int(r * 20))
        elif kind == "late_exceeds_orders":
            put("late_shipments", row, int(frame["orders"][row]) + 1 + int(r * 5))
        elif kind == "rating_out_of_range":
            put("rating", row, 0 if r < 0.5 else 6)
        elif kind == "created_after_delivery":
            put("created_at", row, (dt_epoch + 1) * _DAY_US + int(r * 86_400) * 1_000_000)
        elif kind == "text_too_long":
            unit = "质量很差，与描述不符。" if r < 0.5 else "Terrible, not as described. "
            length = 10_001 + int(r * 2000)
            put("text", row, (unit * (length // len(unit) + 1))[:length])
        elif kind == "first_response_before_opened":
            opened = int(frame["opened_at"][row])
            put("first_response_at", row, opened - (1 + int(r * 48)) * _HOUR_US)
        elif kind == "refund_nan":
            put("refund_amount", row, float("nan"))
            nan_rows.append(row)
        # unparseable_* are applied after the text conversion (_inject_text)
    replaced = []
    for col, (idx, values) in updates.items():
        s = frame.get_column(col)
        new = pl.Series(col, values, dtype=s.dtype)
        replaced.append(s.clone().scatter(idx, new))
    if replaced:
        frame = frame.with_columns(replaced)
    return frame, faults, nan_rows


def _inject_text(
    rng: np.random.Generator, source: str, frame: pl.DataFrame, faults: list[tuple[int, str]]
) -> pl.DataFrame:
    """Apply the string-only faults (unparseable timestamps/dates) to a text frame."""
    idx_ts = [r for r, kind in faults if kind == "unparseable_timestamp"]
    idx_dt = [r for r, kind in faults if kind == "unparseable_date"]
    cols = []
    for idx, col, bad in ((idx_ts, _TS_FOR_BAD.get(source), _BAD_TS),
                          (idx_dt, _DATE_FOR_BAD.get(source), _BAD_DATES)):
        if idx and col is not None:
            vals = [bad[int(u * len(bad))] for u in rng.random(len(idx))]
            cols.append(frame.get_column(col).clone().scatter(idx, pl.Series(vals)))
    return frame.with_columns(cols) if cols else frame


def _file_fault(source: str, fmt: str, frame: pl.DataFrame) -> tuple[str, pl.DataFrame]:
    """Pick the file-level fault that fits the format."""
    if fmt.endswith(".gz"):
        return "truncated_gzip", frame
    if fmt == "parquet":
        return "truncated_parquet", frame
    return "missing_required_column", frame.drop(_DROP_FOR_FAULT[source])


# ----------------------------------------------------------------------------- serialisation


# Timestamp renderings of text files, chosen per file; "mixed" picks one of the first
# three per row (an export merged from several upstream systems).
_STYLES: Final = ("utc_z", "offset_+08:00", "naive_utc", "utc_z_millis", "mixed")


def _ts_text(col: str, style: int) -> pl.Expr:
    us = pl.col(col)
    naive = us.cast(pl.Datetime("us"))
    if style == 0:
        return naive.dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    if style == 1:  # China Standard Time has no DST: a fixed +08:00 shift is exact
        return (us + 8 * _HOUR_US).cast(pl.Datetime("us")).dt.strftime("%Y-%m-%dT%H:%M:%S+08:00")
    if style == 2:
        return naive.dt.strftime("%Y-%m-%dT%H:%M:%S")
    return naive.dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")


def _as_text(frame: pl.DataFrame, source: str, style: int, rng: np.random.Generator
             ) -> pl.DataFrame:
    """Dates and timestamps as ISO strings; style 4 mixes Z / +08:00 / naive per row."""
    exprs = []
    mix = None
    if style == 4:
        mix = pl.Series(rng.integers(0, 3, size=frame.height))
    for col, kind in _COLUMNS[source]:
        if col not in frame.columns:
            continue
        if kind == _D:
            exprs.append(pl.col(col).cast(pl.Date).dt.strftime("%Y-%m-%d"))
        elif kind == _T:
            if mix is None:
                exprs.append(_ts_text(col, style).alias(col))
            else:
                m = pl.lit(mix)
                exprs.append(
                    pl.when(m == 0).then(_ts_text(col, 0))
                    .when(m == 1).then(_ts_text(col, 1))
                    .otherwise(_ts_text(col, 2)).alias(col)
                )
    return frame.with_columns(exprs) if exprs else frame


def _serialise(
    frame: pl.DataFrame, source: str, fmt: str, *, gb18030: bool, bom: bool,
    nan_rows: list[int]
) -> bytes:
    if fmt == "parquet":
        return _parquet_bytes(frame, source)
    if fmt.startswith("csv"):
        text = frame.write_csv(include_bom=bom and not gb18030, float_precision=2)
        data = text.encode("gb18030") if gb18030 else text.encode("utf-8")
    else:
        text = frame.write_ndjson()
        if nan_rows:
            # JSON has no NaN literal; the faulty value arrives as the string "NaN".
            lines = text.split("\n")
            for r in nan_rows:
                lines[r] = lines[r].replace('"refund_amount":null', '"refund_amount":"NaN"', 1)
            text = "\n".join(lines)
        data = text.encode("utf-8")
    if fmt.endswith(".gz"):
        # mtime=0 and no file name in the header: byte-identical across runs.
        data = gzip.compress(data, compresslevel=3, mtime=0)
    return data


def _parquet_bytes(frame: pl.DataFrame, source: str) -> bytes:
    schema = _ARROW_SCHEMA[source]
    cols = []
    for col, kind in _COLUMNS[source]:
        if col not in frame.columns:
            continue
        if kind == _D:
            cols.append(pl.col(col).cast(pl.Date))
        elif kind == _T:
            cols.append(pl.col(col).cast(pl.Datetime("us", "UTC")))
        else:
            cols.append(pl.col(col))
    table = frame.select(cols).to_arrow()
    table = table.cast(pa.schema([schema.field(c) for c in table.column_names]))
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", compression_level=3, row_group_size=1 << 20)
    return buf.getvalue()


def _write_parquet(frame: pl.DataFrame, path: Path) -> None:
    table = frame.to_arrow()
    table = table.cast(
        pa.schema(
            [
                pa.field(f.name, pa.string() if pa.types.is_large_string(f.type)
                         or pa.types.is_string_view(f.type) else f.type)
                for f in table.schema
            ]
        )
    )
    pq.write_table(table, path, compression="zstd")
