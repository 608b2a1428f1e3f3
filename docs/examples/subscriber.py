"""Follow RTAP's transcripts over ZeroMQ and never miss one: subscribe, then catch up.

    python docs/examples/subscriber.py [--host 127.0.0.1] [--after-seq N]

Prints one JSON line per transcript, each exactly once and in order. Needs only
pyzmq. It subscribes to the transcripts (6553) first and then asks the catch-up
socket (6554) for everything after the last seq it has, so nothing falls
between the two; a gap in ``seq`` later (its high-water mark overflowed, or it
was away) is filled the same way. A different ``service_id`` in a catch-up
reply means the service restarted and counts from 0 again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import zmq


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--transcripts-port", type=int, default=6553)
    parser.add_argument("--catchup-port", type=int, default=6554)
    parser.add_argument("--after-seq", type=int, default=-1, help="the last seq you have")
    parser.add_argument("--count", type=int, default=0, help="exit after this many (0: never)")
    args = parser.parse_args()

    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.connect(f"tcp://{args.host}:{args.transcripts_port}")
    sub.subscribe(b"transcript")
    ask = context.socket(zmq.REQ)
    ask.setsockopt(zmq.RCVTIMEO, 5000)
    ask.connect(f"tcp://{args.host}:{args.catchup_port}")
    time.sleep(0.3)  # ZeroMQ's slow joiner: let the subscription reach the publisher

    last, service, printed = args.after_seq, None, 0
    recent: set[int] = set()  # the seqs of the last catch-up, which live ones may repeat

    def show(transcript: dict) -> None:
        nonlocal last, printed
        print(
            json.dumps(
                {
                    "seq": transcript["seq"],
                    "text": transcript["text"],
                    "session_id": transcript["session_id"],
                }
            ),
            flush=True,
        )
        last, printed = transcript["seq"], printed + 1

    def catch_up() -> None:
        nonlocal last, service
        ask.send_json({"after_seq": last, "limit": 1000})
        reply = ask.recv_json()
        if service is not None and reply["service_id"] != service:
            print("the service restarted: counting from 0 again", file=sys.stderr)
            last = -1
            return catch_up()
        service = reply["service_id"]
        if reply["lost"]:
            print(f"{reply['lost']} transcripts are gone for good", file=sys.stderr)
        recent.clear()
        for transcript in reply["transcripts"]:
            recent.add(transcript["seq"])
            if transcript["seq"] > last:
                show(transcript)

    catch_up()
    while not args.count or printed < args.count:
        _, payload = sub.recv_multipart()
        transcript = json.loads(payload)
        if transcript["seq"] <= last:
            if transcript["seq"] in recent:
                continue  # already had it from the catch-up
            catch_up()  # an old seq it never had: the service restarted?
            continue
        if transcript["seq"] != last + 1:
            catch_up()  # a gap: fill it first
            if transcript["seq"] <= last:
                continue
        show(transcript)
    return 0


if __name__ == "__main__":
    sys.exit(main())
