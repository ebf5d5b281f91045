"""Errors an engine raises; the server maps each to its gRPC status code."""

from __future__ import annotations


class InputError(ValueError):
    """The caller sent something unusable (not an image, no face, empty audio).

    Served as INVALID_ARGUMENT. The message names the frame or field at fault.
    """


class NoFaceError(InputError):
    """No face was found where one is required."""

    def __init__(self, message: str, frame_indices: list[int] | None = None):
        super().__init__(message)
        self.frame_indices = list(frame_indices or [])


class WeightsError(RuntimeError):
    """Weights are missing or do not match the network: FAILED_PRECONDITION."""


class NotFoundError(InputError):
    """The caller named something this server does not have (e.g. a template): NOT_FOUND."""
