"""Device choice: cuda, then mps, then cpu; torch is imported only when asked."""

from __future__ import annotations


def resolve_device(requested: str) -> str:
    if requested not in ("auto", "cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {requested!r} (auto, cpu, cuda, mps)")
    if requested == "cpu":
        return "cpu"
    try:
        import torch
    except ImportError:  # lite engines run without torch
        if requested == "auto":
            return "cpu"
        raise
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' requested but torch sees no MPS device")
    return requested
