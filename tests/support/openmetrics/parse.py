"""Parse an OpenMetrics exposition from stdin with the Prometheus project's own Python
parser (prometheus-client, strict OpenMetrics), and print every sample as JSON lines:
{"family": ..., "type": ..., "name": ..., "labels": {...}, "value": ...}.
Exits non-zero (with the parser's message) when the text is not valid OpenMetrics."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main() -> int:
    text = sys.stdin.read()
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser raises ValueError and friends
        print(f"invalid exposition: {e}", file=sys.stderr)
        return 1
    for family in families:
        for sample in family.samples:
            print(json.dumps({
                "family": family.name,
                "type": family.type,
                "name": sample.name,
                "labels": sample.labels,
                "value": sample.value,
            }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
