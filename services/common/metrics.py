"""Prometheus metrics every model server exports on its side port (``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

REQUESTS = Counter(
    "talkinghead_requests_total",
    "RPCs finished, by status code (CANCELLED: the client cancelled; DEADLINE_EXCEEDED: the "
    "call's deadline passed).",
    ["stage", "method", "code"],
)
FRAMES = Counter("talkinghead_frames_total", "Frames produced.", ["stage"])
REQUEST_SECONDS = Histogram(
    "talkinghead_request_seconds",
    "Wall time of one RPC.",
    ["stage", "method"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800),
)
STREAMS_IN_FLIGHT = Gauge("talkinghead_streams_in_flight", "RPCs being served.", ["stage"])
NETWORK_SECONDS = Counter(
    "talkinghead_network_seconds_total",
    "Seconds inside the networks' forward passes; the rest of request time is pre/post-"
    "processing and transport. On cuda only with TALKINGHEAD_NETWORK_TIMING=sync.",
    ["stage"],
)
PARSE_MASKS = Counter(
    "talkinghead_restore_parse_masks_total",
    "Paste-back masks made with the face parser (one parser run and blur per face), by "
    "paste-mask mode: parse (every frame) or presenter (once per motion-clip frame).",
    ["mode"],
)
PASTE_MASK_REUSES = Counter(
    "talkinghead_restore_paste_mask_reuses_total",
    "Faces pasted with a presenter mask made earlier for the same motion-clip frame.",
)
READY = Gauge("talkinghead_ready", "1 once the model is loaded and warm.", ["stage", "engine"])


def serve_metrics(host: str, port: int) -> None:
    """Start the /metrics HTTP endpoint in a daemon thread (port 0 disables it)."""
    if port:
        start_http_server(port, addr=host)
