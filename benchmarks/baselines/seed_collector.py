"""The seed's collector, as the seed wrote it: the Flask development server, kafka-python,
fire-and-forget sends (the answer does not wait for Kafka), request headers merged into the event.

Run: python -m benchmarks.baselines.seed_collector --bind 127.0.0.1:25001 --kafka 127.0.0.1:29092 --topic T
(the bench writes to a topic of its own, so that the router does not see the seed's events).
"""

from __future__ import annotations

import argparse
import json

from flask import Flask, request
from kafka import KafkaProducer

from benchmarks.kafka_util import python_client_auth


def create_app(bootstrap: str, topic: str) -> Flask:
    app = Flask(__name__)
    producer = KafkaProducer(bootstrap_servers=bootstrap, **python_client_auth())  # SASL: as the bench's admin

    def log_to_kafka(event):
        event.update(request.headers)
        producer.send(topic, json.dumps(event).encode())

    @app.route("/")
    def default_response():
        log_to_kafka({"event_type": "default"})
        return "This is the default response!\n"

    @app.route("/purchase_a_sword")
    def purchase_a_sword():
        log_to_kafka({"event_type": "purchase_sword"})
        return "Sword Purchased!\n"

    @app.route("/join_a_guild")
    @app.route("/join_guild")
    def join_guild():
        log_to_kafka({"event_type": "join_guild"})
        return "Joined a Guild!\n"

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", required=True, metavar="HOST:PORT")
    parser.add_argument("--kafka", required=True, metavar="BOOTSTRAP")
    parser.add_argument("--topic", required=True)
    args = parser.parse_args()
    host, port = args.bind.rsplit(":", 1)
    create_app(args.kafka, args.topic).run(host=host, port=int(port))  # the dev server, threaded


if __name__ == "__main__":
    main()
