"""Who may call a model server: an optional shared token, and optional TLS.

A server started with a token (``--token-file`` or ``TALKINGHEAD_TOKEN``) refuses every
call that does not carry ``authorization: Bearer <token>`` with UNAUTHENTICATED, except the
standard health checks, which load balancers must reach without secrets. With a
certificate and key (``--tls-cert``/``--tls-key``) it speaks TLS only. Clients read the
same token from ``TALKINGHEAD_TOKEN`` and trust ``TALKINGHEAD_TLS_CA`` when it is set.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from pathlib import Path

import grpc

AUTH_HEADER = "authorization"
OPEN_METHODS_PREFIX = "/grpc.health.v1.Health/"


def read_token(token_file: str | None) -> str | None:
    """The shared token from a file (preferred: not visible in `ps`) or the environment."""
    if token_file:
        token = Path(token_file).read_text().strip()
        if not token:
            raise ValueError(f"token file {token_file!r} is empty")
        return token
    return os.environ.get("TALKINGHEAD_TOKEN") or None


class TokenInterceptor(grpc.ServerInterceptor):
    """UNAUTHENTICATED for any call without the right bearer token (health checks exempt)."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

        def refuse(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "missing or wrong token (send 'authorization: Bearer <token>')")

        self._refusals = {
            (False, False): grpc.unary_unary_rpc_method_handler(refuse),
            (False, True): grpc.unary_stream_rpc_method_handler(refuse),
            (True, False): grpc.stream_unary_rpc_method_handler(refuse),
            (True, True): grpc.stream_stream_rpc_method_handler(refuse),
        }

    def intercept_service(self, continuation: Callable, handler_call_details):
        method = handler_call_details.method or ""
        if method.startswith(OPEN_METHODS_PREFIX):
            return continuation(handler_call_details)
        sent = dict(handler_call_details.invocation_metadata or ()).get(AUTH_HEADER, "")
        if hmac.compare_digest(str(sent).encode(), self._expected):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return self._refusals[(handler.request_streaming, handler.response_streaming)]


def server_credentials(cert_file: str, key_file: str) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(Path(key_file).read_bytes(), Path(cert_file).read_bytes())]
    )


class _TokenMetadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                     grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the bearer token to every call of a channel."""

    def __init__(self, token: str):
        self._pair = (AUTH_HEADER, f"Bearer {token}")

    def _details(self, details):
        metadata = list(details.metadata or []) + [self._pair]
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else \
            _Details(details.method, details.timeout, metadata, details.credentials,
                     details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._details(details), requests)


class _Details(grpc.ClientCallDetails):
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression):
        self.method, self.timeout, self.metadata = method, timeout, metadata
        self.credentials, self.wait_for_ready, self.compression = (
            credentials, wait_for_ready, compression)


def client_channel(target: str, options: list) -> grpc.Channel:
    """A channel to a model server, with TLS and the token when the environment says so."""
    ca = os.environ.get("TALKINGHEAD_TLS_CA")
    if ca:
        channel = grpc.secure_channel(
            target, grpc.ssl_channel_credentials(root_certificates=Path(ca).read_bytes()),
            options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    token = os.environ.get("TALKINGHEAD_TOKEN")
    return grpc.intercept_channel(channel, _TokenMetadata(token)) if token else channel
