#!/usr/bin/env python3
"""Sends one command to the licensing backend over Kafka and waits for its
outcome, as another team's service would (any Kafka client does; this one
is confluent-kafka from PyPI).

    python3 examples/send_command.py .run/kafka/clients/caller.properties \\
        licensing.activation.commands Activate <license id> \\
        '{"license_key": "…", "fingerprint": {"machine_id": "m-1", "disk": "d-1", "board": "b-1", "mac": "aa:bb:cc:dd:ee:01"}}'

Prints the outcome (JSON) and its headers; exits 1 when the command was
rejected, 2 when no outcome came within 30 seconds.
"""
import datetime
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition


def properties(path):
    conf = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                conf[key.strip()] = value.strip()
    return conf


def main():
    props, topic, command_type, aggregate_id, payload = sys.argv[1:6]
    prefix = topic.split(".", 1)[0]
    conf = properties(props)
    envelope = {
        "command_id": str(uuid.uuid4()),
        "command_type": command_type,
        "aggregate_id": aggregate_id,
        "issued_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "actor": {"kind": "service", "id": "orders"},
        "correlation_id": "example-" + uuid.uuid4().hex[:12],
        "payload": json.loads(payload),
    }
    # Outcomes are keyed by command id: read from the end of the topic as
    # it is now, so nothing published after the send is missed.
    consumer = Consumer({**conf, "group.id": f"{prefix}.caller.example",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    outcomes = f"{prefix}.command-outcomes"
    parts = consumer.list_topics(outcomes, timeout=10).topics[outcomes].partitions
    assigned = []
    for p in parts:
        _, high = consumer.get_watermark_offsets(TopicPartition(outcomes, p), timeout=10)
        assigned.append(TopicPartition(outcomes, p, high))
    consumer.assign(assigned)

    producer = Producer(conf)
    producer.produce(topic, key=aggregate_id, value=json.dumps(envelope))
    producer.flush(10)

    deadline = time.time() + 30
    while time.time() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error() or msg.key() != envelope["command_id"].encode():
            continue
        outcome = json.loads(msg.value())
        headers = {k: v.decode() for k, v in (msg.headers() or [])}
        print(json.dumps({"headers": headers, "outcome": outcome}, indent=2))
        consumer.close()
        sys.exit(0 if outcome["status"] == "accepted" else 1)
    consumer.close()
    print("no outcome within 30 s", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
