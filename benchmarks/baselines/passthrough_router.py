"""A plain aiokafka consume -> produce passthrough: no parsing, no validation, every record copied
to one output topic. Like Questlog's router it commits a record's offset only once Kafka has
confirmed its copy (acks=all), so it is the ceiling of a Python router with that guarantee on this
machine. It copies what one `getmany` returned, awaits every delivery, then commits.

Run: python -m benchmarks.baselines.passthrough_router --kafka 127.0.0.1:29092 --topic RAW --out OUT --group G
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from benchmarks.kafka_util import python_client_auth


async def passthrough(bootstrap: str, topic: str, out: str, group: str) -> None:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **python_client_auth(),  # SASL: as the bench's admin
    )
    # Batches as large as a tuned producer's: this is the ceiling, not a straw man.
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=512 * 1024, **python_client_auth()
    )
    await consumer.start()
    await producer.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        while not stopping.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            if not batches:
                continue
            futures = [
                await producer.send(out, msg.value, key=msg.key) for records in batches.values() for msg in records
            ]
            await asyncio.gather(*futures)  # delivered: only now may the offsets be committed
            await consumer.commit({tp: records[-1].offset + 1 for tp, records in batches.items()})
    finally:
        await consumer.stop()
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kafka", required=True, metavar="BOOTSTRAP")
    parser.add_argument("--topic", required=True, help="raw topic to read")
    parser.add_argument("--out", required=True, help="topic to copy every record to")
    parser.add_argument("--group", required=True, help="consumer group")
    args = parser.parse_args()
    asyncio.run(passthrough(args.kafka, args.topic, args.out, args.group))


if __name__ == "__main__":
    main()
