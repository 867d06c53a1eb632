"""Load and fault test of `vp serve` on this machine (loopback only; bounded in count and time).

    python benchmarks/serve_load.py --bundle /tmp/tiny --replicas 1 --clients 4 --requests 40
    python benchmarks/serve_load.py --bundle /tmp/tiny --replicas 2 --clients 4 --requests 40 --kill-after 10

A closed loop: `clients` threads each send a t2v request, wait for its answer,
and send the next, until `requests` have been answered. Prints clips per
minute and p50/p99 latency of the successful requests, and every error. With
--kill-after K, the process of the replica that answered the K-th request is
killed (SIGKILL) while the load goes on; the report says which requests
failed, what they were told, whether any request was lost (no answer at all),
and how long Ray took to bring the replica back (GET /healthz answering 200).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request

import numpy as np

from vp.serve.app import ServeConfig, start, stop

BODY = json.dumps({"task": "t2v", "prompt": "a red circle moving left", "seed": 0}).encode()


def one_request(url: str) -> tuple[int, str, str, float]:
    """(status, replica, error message, seconds) of one POST /v1/generate."""
    start_time = time.perf_counter()
    request = urllib.request.Request(url + "/v1/generate", data=BODY, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            response.read()
            return response.status, response.headers.get("X-VP-Replica", ""), "", time.perf_counter() - start_time
    except urllib.error.HTTPError as error:
        text = error.read()
        try:
            message = json.loads(text or b"{}").get("error", error.reason)
        except ValueError:  # Ray's proxy answers some failures in plain text
            message = text.decode(errors="replace")
        return error.code, "", message, time.perf_counter() - start_time
    except OSError as error:
        return 0, "", f"connection: {error}", time.perf_counter() - start_time


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=10) as response:
            return response.status == 200
    except (urllib.error.HTTPError, OSError):
        return False


def run_load(url: str, clients: int, requests: int, kill_after: int | None) -> dict:
    results: list[tuple[int, str, str, float]] = []
    lock = threading.Lock()
    sent = 0
    killed: dict = {}

    def client():
        nonlocal sent
        while True:
            with lock:
                if sent >= requests:
                    return
                sent += 1
            result = one_request(url)
            with lock:
                results.append(result)
                if kill_after and len(results) == kill_after and result[1]:
                    pid = int(result[1].rsplit(":", 1)[1])
                    os.kill(pid, signal.SIGKILL)
                    killed.update(pid=pid, at=time.perf_counter(), after=len(results))

    start_time = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    back_after = None
    if kill_after:
        while "at" not in killed and any(t.is_alive() for t in threads):
            time.sleep(0.05)
        deadline = time.perf_counter() + 120
        time.sleep(1)  # the controller notices the death
        while time.perf_counter() < deadline and killed:
            if healthy(url):
                back_after = time.perf_counter() - killed["at"]
                break
            time.sleep(0.5)
    for t in threads:
        t.join()
    wall = time.perf_counter() - start_time
    ok = [r for r in results if r[0] == 200]
    latency = np.array([r[3] for r in ok]) * 1e3
    return {
        "requests": requests, "answered": len(results), "lost": requests - len(results), "ok": len(ok),
        "errors": [{"status": r[0], "error": r[2]} for r in results if r[0] != 200],
        "wall_s": wall, "clips_per_minute": 60 * len(ok) / wall,
        "p50_ms": float(np.percentile(latency, 50)) if len(ok) else None,
        "p99_ms": float(np.percentile(latency, 99)) if len(ok) else None,
        "replicas_seen": sorted({r[1] for r in ok}),
        "killed": {"pid": killed.get("pid"), "after_request": killed.get("after"),
                   "healthy_again_after_s": back_after} if kill_after else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="per replica (default: CPUs shared out)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--queue", type=int, default=4)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--kill-after", type=int, default=None)
    args = parser.parse_args()
    url = start(ServeConfig(bundle=args.bundle, replicas=args.replicas, threads=args.threads, port=args.port,
                            backend="ort", queue=args.queue))
    try:
        run_load(url, args.clients, 2 * args.clients, None)  # warm-up: every replica's sessions open
        report = run_load(url, args.clients, args.requests, args.kill_after)
    finally:
        stop()
    report.update(replicas=args.replicas, clients=args.clients)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
