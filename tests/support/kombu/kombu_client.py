"""The real kombu producer/consumer, for tests of the Rust transports.

    MQ_URI=<uri> kombu_client.py put <queue> <body>...   # SimpleQueue(queue).put(body) each
    MQ_URI=<uri> kombu_client.py get <queue> <timeout>   # one message as JSON, acked; or null

The URI comes from the environment, never argv.
"""
import json
import os
import sys

import kombu


def main():
    command, queue = sys.argv[1], sys.argv[2]
    with kombu.Connection(os.environ["MQ_URI"]) as conn:
        simple = conn.SimpleQueue(queue)
        if command == "put":
            for body in sys.argv[3:]:
                simple.put(body)
        elif command == "get":
            try:
                message = simple.get(block=True, timeout=float(sys.argv[3]))
            except simple.Empty:
                print("null")
                return
            print(json.dumps({
                "body": message.payload,
                "headers": message.headers,
                "delivery_tag": message.properties.get("delivery_tag"),
                "content_type": message.content_type,
            }))
            message.ack()
        simple.close()


if __name__ == "__main__":
    main()
