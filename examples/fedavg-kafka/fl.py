"""A real federated-learning run: FedAvg over Apache Kafka on scikit-learn's digits data set.

The server and every client are separate processes that exchange model weights through two Kafka
topics; each posts its training events to its flmon sidecar (`FLMON_EVENTS_URL`), and each hands its
librdkafka statistics to the sidecar too. The model is multinomial logistic regression trained with
mini-batch SGD in NumPy, so the run needs nothing beyond the data that ships inside scikit-learn.

    python fl.py server --bootstrap HOST:PORT --clients 5 --rounds 40
    python fl.py client --bootstrap HOST:PORT --client-id site-1 --clients 5 [--slow 3.0] [--drop 8-12]

Topics: `<prefix>.global` (server -> clients: the round number and global weights) and
`<prefix>.updates` (clients -> server: local weights, sample count, local loss/accuracy, time).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
import uuid

import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

N_FEATURES = 64
N_CLASSES = 10


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- the model ------------------------------------------------------------------------------------

def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def loss_and_accuracy(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Cross-entropy loss and accuracy (0-1) of weights `w` (features+1 x classes) on (x, y)."""
    p = softmax(x @ w[:-1] + w[-1])
    loss = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())
    return loss, float((p.argmax(axis=1) == y).mean())


def train_local(w: np.ndarray, x: np.ndarray, y: np.ndarray, epochs: int, lr: float, rng) -> tuple[np.ndarray, float]:
    """Mini-batch SGD; returns the new weights and the norm of the last full gradient."""
    w = w.copy()
    onehot = np.eye(N_CLASSES)[y]
    grad_norm = 0.0
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), 32):
            idx = order[start:start + 32]
            p = softmax(x[idx] @ w[:-1] + w[-1])
            err = (p - onehot[idx]) / len(idx)
            gw = x[idx].T @ err
            gb = err.sum(axis=0)
            w[:-1] -= lr * gw
            w[-1] -= lr * gb
    p = softmax(x @ w[:-1] + w[-1])
    err = (p - onehot) / len(y)
    grad_norm = float(np.sqrt(np.sum((x.T @ err) ** 2) + np.sum(err.sum(axis=0) ** 2)))
    return w, grad_norm


def load_data(seed: int):
    digits = load_digits()
    x = digits.data / 16.0
    y = digits.target
    return train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)


def client_shard(x, y, client_index: int, n_clients: int, seed: int):
    """A non-IID shard: each client sees every class, but two classes far more often."""
    rng = np.random.default_rng(seed + client_index)
    favoured = {(2 * client_index) % N_CLASSES, (2 * client_index + 1) % N_CLASSES}
    weights = np.array([4.0 if c in favoured else 1.0 for c in y])
    weights /= weights.sum()
    size = len(y) // n_clients
    idx = rng.choice(len(y), size=size, replace=False, p=weights)
    return x[idx], y[idx]


# --- plumbing: Kafka and the sidecar --------------------------------------------------------------

class Sidecar:
    """Posts training events and librdkafka statistics to the flmon agent beside this process."""

    def __init__(self, events_url: str | None):
        self.events_url = events_url
        self.stats_url = events_url.rsplit("/v1/", 1)[0] + "/v1/librdkafka-stats" if events_url else None
        self.warned = False

    def _post(self, url: str | None, body: bytes) -> None:
        if not url:
            return
        try:
            req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as resp:
                resp.read()
        except Exception as e:  # the sidecar being away never stops training
            if not self.warned:
                log(f"cannot post to the flmon sidecar at {url}: {e}")
                self.warned = True

    def event(self, event: dict) -> None:
        self._post(self.events_url, json.dumps(event).encode())

    def librdkafka_stats(self, stats_json: str) -> None:
        self._post(self.stats_url, stats_json.encode())


def kafka_config(args, sidecar: Sidecar) -> dict:
    return {
        "bootstrap.servers": args.bootstrap,
        "statistics.interval.ms": 5000,
        "stats_cb": sidecar.librdkafka_stats,
        "message.max.bytes": 2_000_000,
    }


def ensure_topics(args) -> None:
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    want = [NewTopic(f"{args.topic_prefix}.global", 1, 1), NewTopic(f"{args.topic_prefix}.updates", 3, 1)]
    for topic, fut in admin.create_topics(want).items():
        try:
            fut.result()
        except Exception as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise


def encode(obj: dict) -> bytes:
    return json.dumps(obj).encode()


# --- the server -----------------------------------------------------------------------------------

def run_server(args) -> int:
    sidecar = Sidecar(args.events_url)
    ensure_topics(args)
    producer = Producer(kafka_config(args, sidecar))
    consumer = Consumer({**kafka_config(args, sidecar), "group.id": f"{args.topic_prefix}-server",
                         "auto.offset.reset": "latest", "enable.auto.commit": True})
    consumer.subscribe([f"{args.topic_prefix}.updates"])
    _, x_test, _, y_test = load_data(args.seed)
    rng = np.random.default_rng(args.seed)
    w = rng.normal(0, 0.01, size=(N_FEATURES + 1, N_CLASSES))
    run_id = args.run_id or f"fedavg-{uuid.uuid4().hex[:8]}"
    log(f"server: run {run_id}, {args.clients} clients, {args.rounds} rounds")

    # Wait for clients to say hello, so round 1 is not lost on clients still starting.
    seen: set[str] = set()
    deadline = time.time() + args.join_timeout
    while len(seen) < args.clients and time.time() < deadline:
        producer.produce(f"{args.topic_prefix}.global", encode({"type": "hello", "run_id": run_id}))
        producer.poll(0)
        msg = consumer.poll(1.0)
        if msg is not None and not msg.error():
            body = json.loads(msg.value())
            if body.get("type") == "hello":
                seen.add(body["client_id"])
    log(f"server: {len(seen)} of {args.clients} clients joined")

    messages_sent = 0
    for rnd in range(1, args.rounds + 1):
        started = time.time()
        producer.produce(f"{args.topic_prefix}.global",
                         encode({"type": "global", "run_id": run_id, "round": rnd, "weights": w.tolist()}))
        producer.flush(10)
        messages_sent += 1
        updates: dict[str, dict] = {}
        deadline = started + args.round_timeout
        while len(updates) < args.clients and time.time() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            body = json.loads(msg.value())
            if body.get("type") == "update" and body.get("round") == rnd and body.get("run_id") == run_id:
                updates[body["client_id"]] = body
        old = w
        if updates:
            total = sum(u["samples"] for u in updates.values())
            w = sum(np.array(u["weights"]) * (u["samples"] / total) for u in updates.values())
        loss, acc = loss_and_accuracy(w, x_test, y_test)
        duration = time.time() - started
        sidecar.event({
            "type": "round_end", "run_id": run_id, "round": rnd,
            "global_loss": loss, "global_accuracy": acc,
            "participants": len(updates), "expected_participants": args.clients,
            "duration_seconds": duration, "learning_rate": args.lr,
            "gradient_norm": float(np.mean([u["gradient_norm"] for u in updates.values()])) if updates else None,
            "weight_change_norm": float(np.linalg.norm(w - old)),
            "messages_sent": messages_sent, "time": time.time(),
        })
        messages_sent = 0
        log(f"server: round {rnd:3d}  loss {loss:.4f}  accuracy {acc:.3f}  "
            f"participants {len(updates)}/{args.clients}  {duration:.1f}s")
        if args.round_pause:
            time.sleep(args.round_pause)
    producer.produce(f"{args.topic_prefix}.global", encode({"type": "done", "run_id": run_id}))
    producer.flush(10)
    consumer.close()
    log("server: training finished")
    return 0


# --- a client -------------------------------------------------------------------------------------

def parse_drop(spec: str | None) -> set[int]:
    if not spec:
        return set()
    lo, _, hi = spec.partition("-")
    return set(range(int(lo), int(hi or lo) + 1))


def run_client(args) -> int:
    sidecar = Sidecar(args.events_url)
    ensure_topics(args)
    x_train, _, y_train, _ = load_data(args.seed)
    index = int("".join(c for c in args.client_id if c.isdigit()) or "0")
    x, y = client_shard(x_train, y_train, index, args.clients, args.seed)
    drop = parse_drop(args.drop)
    rng = np.random.default_rng(args.seed * 1000 + index)
    producer = Producer(kafka_config(args, sidecar))
    consumer = Consumer({**kafka_config(args, sidecar), "group.id": f"{args.topic_prefix}-{args.client_id}",
                         "enable.auto.commit": False})
    # Manual assignment at the end of the global topic: only rounds from now on matter.
    consumer.assign([TopicPartition(f"{args.topic_prefix}.global", 0, -1)])
    log(f"client {args.client_id}: {len(y)} samples, slow x{args.slow}, drops rounds {sorted(drop) or 'none'}")
    producer.produce(f"{args.topic_prefix}.updates",
                     encode({"type": "hello", "client_id": args.client_id}))
    producer.flush(10)
    while True:
        msg = consumer.poll(1.0)
        if msg is None or msg.error():
            continue
        body = json.loads(msg.value())
        if body.get("type") == "hello":
            producer.produce(f"{args.topic_prefix}.updates",
                             encode({"type": "hello", "client_id": args.client_id}))
            producer.poll(0)
            continue
        if body.get("type") == "done":
            break
        if body.get("type") != "global":
            continue
        rnd = body["round"]
        if rnd in drop:
            log(f"client {args.client_id}: offline for round {rnd}")
            continue
        started = time.time()
        w, grad_norm = train_local(np.array(body["weights"]), x, y, args.epochs, args.lr, rng)
        base = time.time() - started
        time.sleep(args.work_seconds * args.slow + base * (args.slow - 1.0))
        seconds = time.time() - started
        loss, acc = loss_and_accuracy(w, x, y)
        producer.produce(f"{args.topic_prefix}.updates", encode({
            "type": "update", "run_id": body["run_id"], "round": rnd, "client_id": args.client_id,
            "weights": w.tolist(), "samples": len(y), "gradient_norm": grad_norm,
        }))
        producer.flush(10)
        sidecar.event({
            "type": "client_update", "run_id": body["run_id"], "round": rnd, "client_id": args.client_id,
            "loss": loss, "accuracy": acc, "training_seconds": seconds, "samples": int(len(y)),
            "time": time.time(),
        })
    consumer.close()
    log(f"client {args.client_id}: done")
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("role", choices=["server", "client"])
    p.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    p.add_argument("--topic-prefix", default="fl")
    p.add_argument("--events-url", default=os.environ.get("FLMON_EVENTS_URL"))
    p.add_argument("--clients", type=int, default=5)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--run-id", default=None)
    p.add_argument("--client-id", default=os.environ.get("FL_CLIENT_ID", "site-0"))
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--slow", type=float, default=1.0, help="straggler factor on the client's training time")
    p.add_argument("--work-seconds", type=float, default=0.3, help="simulated extra work per round")
    p.add_argument("--drop", default=None, help="rounds this client is offline, e.g. 8-12")
    p.add_argument("--round-timeout", type=float, default=8.0)
    p.add_argument("--round-pause", type=float, default=0.0)
    p.add_argument("--join-timeout", type=float, default=60.0)
    args = p.parse_args(argv)
    return run_server(args) if args.role == "server" else run_client(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
