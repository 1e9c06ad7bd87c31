"""The dedupe index: which records (topic, key) the sink has landed, and in which batch.

Spark's `dropDuplicatesWithinWatermark` did this job before: it shuffled every record (its whole
value) to the task owning its key, and after every batch scanned the WHOLE state to evict expired
keys. At 5,000 events/s with the 7-day window that state holds billions of keys, so each batch
would scan them all. The index is a RocksDB database on the driver's disk instead
(`Settings.dedupe_index_dir`): a batch's keys are collected once (Arrow, no shuffle), looked up in
one multi-get, and the new ones written in one synced write batch; expiry is RocksDB's TTL, done by
its background compactions, so a batch costs in proportion to its own records, never to the
index's size. A key stays at least QUESTLOG_DEDUPE_WINDOW_H after it was landed (longer until a
compaction drops it).

Exactly-once with the checkpoint: each key records the batch that landed it as ``<run>:<batch>``,
where ``<run>`` names the checkpoint. A batch that Spark runs again after a crash (same offsets)
finds its own keys recorded under its own name and lands them again (its files replace the
earlier attempt's, `writer`); a key recorded by any other batch, of this checkpoint or of another,
is a repeat and is dropped. So a lost or reset checkpoint re-reading Kafka from the start lands
nothing twice within the window either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

SEPARATOR = b"\x00"  # between the topic and the record's key (neither contains it)


def index_key(topic: str, key: str) -> bytes:
    return topic.encode() + SEPARATOR + key.encode()


def index_keys(ids: pa.Table) -> list[bytes]:
    """The index keys of a batch's records (columns ``topic`` and ``dedupe_key``), as `index_key`
    makes them, in one vectorised pass."""
    topic, key = (ids.column(c).cast(pa.binary()) for c in ("topic", "dedupe_key"))
    return pc.binary_join_element_wise(topic, key, SEPARATOR).to_pylist()


def dedupe_keys(ids: pa.Table, separators: Mapping[str, str]) -> pa.ChunkedArray:
    """Each record's identity (binary), from a batch's columns ``topic``, ``key`` (Kafka's),
    ``fallback_key`` (`transform.with_fallback_key`), ``partition`` and ``offset``: the Kafka key
    with its topic's separator (``separators``: topic -> `Table.key_separator`) turned into U+0001,
    which is what the JSON of an unkeyed copy gives; else the key read from the JSON; else, for a
    record with neither (or of a topic without a table), its own position ``@:<partition>:<offset>``.
    The router puts a table's key columns into the Kafka key joined by the separator, which none
    of them contains, so a record is recognised whether or not its copy was keyed."""
    key = ids.column("key").cast(pa.binary())
    by_key = pa.nulls(len(ids), pa.binary())
    for separator in sorted(set(separators.values())):
        topics = pa.array([t for t, s in separators.items() if s == separator], pa.string())
        mine = pc.is_in(ids.column("topic"), value_set=topics)
        by_key = pc.if_else(mine, pc.replace_substring(key, separator, "\u0001"), by_key)
    by_json = ids.column("fallback_key").cast(pa.binary())
    found = pc.coalesce(_non_empty(by_key), _non_empty(by_json))
    if found.null_count == 0:
        return found
    strings = [ids.column(c).cast(pa.string()).cast(pa.binary()) for c in ("partition", "offset")]
    return pc.coalesce(found, pc.binary_join_element_wise(b"@", *strings, b":"))


def _non_empty(keys: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.if_else(pc.greater(pc.binary_length(keys), 0), keys, pa.nulls(len(keys), pa.binary()))


def repeats(ids: pa.Table, index: DedupeIndex, batch: bytes) -> tuple[list[int], list[bytes]]:
    """(the rows of ``ids`` to drop, the keys this batch lands first): `select` over a batch's
    records (columns ``topic``, ``dedupe_key``, ``partition``, ``offset``), with the index's answer
    for their keys. A batch of new, distinct keys (the common case) skips the ordering."""
    keys = index_keys(ids)
    landed_by = index.landed_by(keys)
    if not landed_by and len(set(keys)) == len(keys):
        return [], keys
    order = pc.sort_indices(
        ids, sort_keys=[("topic", "ascending"), ("partition", "ascending"), ("offset", "ascending")]
    ).to_pylist()
    return select(keys, order, landed_by, batch)


def select(
    keys: Sequence[bytes], order: Sequence[int], landed_by: dict[bytes, bytes], batch: bytes
) -> tuple[list[int], list[bytes]]:
    """Which records of a batch are repeats, and which keys it lands for the first time.

    ``keys[i]`` is record i's index key, ``order`` the records in Kafka order (topic, partition,
    offset), ``landed_by`` what the index holds for the batch's keys (``<run>:<batch>``) and
    ``batch`` this batch's own name. Returns (the indexes of the records to drop, the keys to
    record): a record is dropped when another batch landed its key, or an earlier record of this
    batch has it. The first record of a key in Kafka order is the one kept, so a re-run of the batch
    keeps the same records."""
    drop: list[int] = []
    new: list[bytes] = []
    kept: set[bytes] = set()
    for i in order:
        key = keys[i]
        by = landed_by.get(key)
        if (by is not None and by != batch) or key in kept:
            drop.append(i)
            continue
        kept.add(key)
        if by is None:
            new.append(key)
    return drop, new


# Its memory: two write buffers, the block cache, and the SST files' indexes and bloom filters
# (about 1.3 bytes a key).
WRITE_BUFFER_MB = 32
BLOCK_CACHE_MB = 64


def options():
    """RocksDB's options for the index: a bloom filter per SST file (almost every look-up is of a new
    key, which the filters answer without reading a block), LZ4 blocks, bounded memory."""
    from rocksdict import BlockBasedOptions, Cache, DBCompressionType, Options

    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)  # ~1% false positives, 10 bits a key
    table.set_block_cache(Cache(BLOCK_CACHE_MB * 2**20))
    opts = Options(raw_mode=True)
    opts.set_block_based_table_factory(table)
    opts.set_compression_type(DBCompressionType.lz4())
    opts.set_write_buffer_size(WRITE_BUFFER_MB * 2**20)
    opts.set_max_write_buffer_number(2)
    return opts


class DedupeIndex:
    """The RocksDB database of landed keys; one sink at a time may open it."""

    def __init__(self, path: Path, window_s: float) -> None:
        from rocksdict import AccessType, Rdict, WriteOptions

        path.mkdir(parents=True, exist_ok=True)
        try:
            self.db = Rdict(str(path), options(), access_type=AccessType.with_ttl(max(1, int(window_s))))
        except Exception as exc:
            if "lock" in str(exc).lower():
                raise RuntimeError(
                    f"the dedupe index {path} is open in another process: is another sink running with "
                    f"QUESTLOG_HOME={path.parent.parent}?"
                ) from exc
            raise
        self.synced = WriteOptions()
        self.synced.sync = True  # a batch's keys are on disk before Spark commits the batch

    def landed_by(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        """{key: the batch that landed it} for those of ``keys`` the index holds."""
        found: Any = self.db.get(list(keys)) if keys else []  # one multi-get
        return {k: v for k, v in zip(keys, found, strict=True) if v is not None}

    def record(self, keys: Sequence[bytes], batch: bytes) -> None:
        if not keys:
            return
        from rocksdict import WriteBatch

        writes = WriteBatch(raw_mode=True)
        for key in keys:
            writes.put(key, batch)
        self.db.write(writes, self.synced)

    def size(self) -> tuple[int, int]:
        """(RocksDB's estimate of the keys held, bytes of its SST files on disk)."""
        keys = self.db.property_int_value("rocksdb.estimate-num-keys") or 0
        return keys, self.db.property_int_value("rocksdb.total-sst-files-size") or 0

    def close(self) -> None:
        self.db.close()
