"""Reading the official ``.pkl`` driving templates without running code from them.

LivePortrait stores templates with ``pickle``, which can execute arbitrary code when
loaded. We read them with an unpickler that resolves only what a template holds: numpy
arrays, numpy scalars and plain containers. Anything else (``os.system``, ``eval``, any
other class) is refused and the template rejected.

This module only turns a pickle into the ``.npz`` bytes of the same template; the template
itself is built and validated by ``template.py`` (``template_from_pkl``), which imports this
module, never the other way round.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

from talkinghead.services.common.errors import InputError

# (module, name) pairs a numpy array or scalar pickle needs; numpy 2 renamed numpy.core.
_ALLOWED = {
    (mod, name)
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("builtins", "dict"), ("builtins", "list"),
     ("builtins", "tuple"), ("builtins", "set"), ("builtins", "frozenset"),
     ("collections", "OrderedDict"), ("codecs", "encode")}
_ALLOWED |= {("numpy.dtypes", name) for name in ("Float32DType", "Float64DType", "Int64DType",
                                                  "Int32DType", "UInt8DType", "BoolDType")}


class _TemplateUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}")
        return super().find_class(module, name)


def safe_unpickle(data: bytes):
    try:
        return _TemplateUnpickler(io.BytesIO(data)).load()
    except Exception as exc:  # noqa: BLE001 - any failure: not a template we accept
        raise InputError(f"refused template pickle: {exc}") from exc


def npz_from_pkl(data: bytes, name: str = "custom") -> bytes:
    """An official template pickle ({'n_frames', 'output_fps', 'motion': [per-frame dicts]})
    as the bytes of our .npz template, for ``template.template_from_npz`` to validate."""
    raw = safe_unpickle(data)
    if not isinstance(raw, dict) or "motion" not in raw:
        raise InputError(f"template {name!r}: pickle holds no 'motion' list")
    frames = raw["motion"]
    try:
        arrays = {
            "scale": np.stack([np.asarray(f["scale"]).reshape(1) for f in frames]),
            "R": np.stack([np.asarray(f.get("R", f.get("R_d"))).reshape(3, 3) for f in frames]),
            "exp": np.stack([np.asarray(f["exp"]).reshape(21, 3) for f in frames]),
            "t": np.stack([np.asarray(f["t"]).reshape(3) for f in frames]),
            "fps": np.asarray(float(raw.get("output_fps", 25))),
        }
        for key, names in (("c_d_eyes_lst", ("c_eyes_lst", "c_d_eyes_lst")),
                           ("c_d_lip_lst", ("c_lip_lst", "c_d_lip_lst"))):
            values = next((raw[n] for n in names if n in raw and len(raw[n])), None)
            if values is not None:
                arrays[key] = np.stack([np.asarray(v, dtype=np.float32) for v in values])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"template {name!r}: malformed motion frames: {exc}") from exc
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()
