"""Stable merchant buckets and shard membership, pinned to the SHA-256 definition."""

from __future__ import annotations

import hashlib

import polars as pl

from transforms.sharding import BUCKETS, bucket_of, buckets_of, shard_members, with_bucket


def _defined(merchant_id: str) -> int:
    """The documented bucket: the first 8 bytes of SHA-256, big-endian, modulo BUCKETS."""
    return int.from_bytes(hashlib.sha256(merchant_id.encode()).digest()[:8], "big") % BUCKETS


IDS = [f"M{k:06d}" for k in range(5000)] + ["", "商户-7", "M000001 "]


def test_buckets_follow_the_sha256_definition() -> None:
    assert buckets_of(IDS) == [_defined(m) for m in IDS]
    assert [bucket_of(m) for m in IDS[:50]] == [_defined(m) for m in IDS[:50]]
    assert sorted(set(buckets_of(IDS))) == list(range(BUCKETS))


def test_shards_split_the_distinct_ids_by_bucket_range() -> None:
    registry = pl.DataFrame({"merchant_id": [*IDS, None, IDS[0], IDS[1]]})
    bucketed = with_bucket(registry.unique())
    seen: list[str] = []
    for shard in range(4):
        got = shard_members(registry, shard, 4)
        assert got.schema == pl.Schema({"merchant_id": pl.String})
        want = bucketed.filter(pl.col("_bucket").is_between(16 * shard, 16 * shard + 15))["merchant_id"]
        assert sorted(got["merchant_id"]) == sorted(want)
        seen += got["merchant_id"].to_list()
    assert sorted(seen) == sorted(IDS)  # every id once, the null in none
    assert shard_members(pl.DataFrame(schema={"merchant_id": pl.String}), 0, 4).height == 0
