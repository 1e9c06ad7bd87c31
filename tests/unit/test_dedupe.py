"""The sink's dedupe index: which records of a batch are repeats, on a real RocksDB (no Spark)."""

import time

import pyarrow as pa
import pytest

from spark_sink.dedupe import DedupeIndex, index_key, index_keys, repeats, select

A, B, C = (index_key("events.level_up", k) for k in ("game-a\x01e-1", "game-a\x01e-2", "game-b\x01e-1"))


def test_the_first_record_of_a_key_in_kafka_order_is_kept_and_recorded():
    keys = [B, A, A, C, B]
    order = [1, 2, 0, 4, 3]  # Kafka order (topic, partition, offset) of the five records
    drop, new = select(keys, order, {}, b"run:7")
    assert sorted(drop) == [2, 4]  # A first at 1, B first at 0 in Kafka order
    assert new == [A, B, C]


def test_a_key_landed_by_another_batch_is_a_repeat_and_one_landed_by_this_batch_is_not():
    keys = [A, B, C]
    landed = {A: b"run:6", B: b"run:7", C: b"other-run:7"}
    drop, new = select(keys, [0, 1, 2], landed, b"run:7")
    # B: this very batch recorded it in an attempt that did not commit; it runs again and lands it
    # again. C: landed by another checkpoint's batch of the same number: a repeat.
    assert drop == [0, 2]
    assert new == []


def test_the_index_keeps_what_it_recorded_across_a_reopen(tmp_path):
    index = DedupeIndex(tmp_path / "index", window_s=3600)
    index.record([A, B], b"run:1")
    assert index.landed_by([A, C, A]) == {A: b"run:1"}
    index.close()
    index = DedupeIndex(tmp_path / "index", window_s=3600)
    try:
        assert index.landed_by([A, B, C]) == {A: b"run:1", B: b"run:1"}
        keys, on_disk = index.size()
        assert keys >= 2 and on_disk >= 0
    finally:
        index.close()


def test_a_second_sink_on_the_same_index_gets_a_clear_error(tmp_path):
    index = DedupeIndex(tmp_path / "index", window_s=3600)
    try:
        with pytest.raises(RuntimeError, match="open in another process"):
            DedupeIndex(tmp_path / "index", window_s=3600)
    finally:
        index.close()


def test_keys_older_than_the_window_are_dropped_by_compaction(tmp_path):
    index = DedupeIndex(tmp_path / "index", window_s=1)
    try:
        index.record([A], b"run:1")
        time.sleep(2.5)
        index.record([B], b"run:2")
        index.db.compact_range(None, None)  # what RocksDB's background compactions do in time
        assert index.landed_by([A, B]) == {B: b"run:2"}
    finally:
        index.close()


def ids(*records):
    """A batch's ids as the sink collects them: (topic, dedupe_key, partition, offset) rows."""
    topic, key, partition, offset = zip(*records, strict=True)
    return pa.table(
        {
            "topic": pa.array(topic),
            "dedupe_key": pa.array(key),
            "partition": pa.array(partition, pa.int32()),
            "offset": pa.array(offset, pa.int64()),
        }
    )


def test_a_batch_keys_are_the_index_keys_and_its_repeats_are_found_against_the_index(tmp_path):
    batch = ids(
        ("events.level_up", "game-a\x01e-1", 0, 5),
        ("events.level_up", "game-a\x01e-1", 0, 3),  # the same event, earlier in Kafka: kept
        ("events.join_guild", "game-a\x01e-1", 0, 4),  # another topic: another key
        ("events.level_up", "game-a\x01e-2", 1, 9),  # landed by batch 1
    )
    assert index_keys(batch) == [index_key(r["topic"], r["dedupe_key"]) for r in batch.to_pylist()]
    index = DedupeIndex(tmp_path / "index", window_s=3600)
    try:
        index.record([index_key("events.level_up", "game-a\x01e-2")], b"run:1")
        drop, new = repeats(batch, index, b"run:2")
        assert sorted(drop) == [0, 3]
        assert sorted(new) == sorted(
            [index_key("events.level_up", "game-a\x01e-1"), index_key("events.join_guild", "game-a\x01e-1")]
        )
        # a batch of new, distinct keys: nothing dropped, every key new, in the batch's order
        fresh = ids(("events.level_up", "x\x01a", 0, 1), ("events.level_up", "x\x01b", 0, 2))
        assert repeats(fresh, index, b"run:3") == ([], index_keys(fresh))
    finally:
        index.close()
