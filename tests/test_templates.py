"""Driving templates: .npz validation, resampling, and the official .pkl read safely."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest

from talkinghead.services.common.errors import InputError
from talkinghead.services.motion.template import (
    load_template,
    template_from_npz,
    template_from_pkl,
)


def official_pickle(template) -> bytes:
    """A template pickled the way the official pipeline writes it."""
    motion = [
        {"scale": template.scale[i][None], "R": template.R[i][None],
         "exp": template.exp[i][None], "t": template.t[i][None]}
        for i in range(template.n_frames)
    ]
    return pickle.dumps({"n_frames": template.n_frames, "output_fps": template.fps,
                         "motion": motion, "c_eyes_lst": [], "c_lip_lst": []})


def test_official_pickle_reads_like_the_npz():
    talking = load_template("talking")
    restored = template_from_pkl(official_pickle(talking), name="talking")
    assert restored.n_frames == 100 and restored.fps == 20
    for key in ("scale", "R", "exp", "t"):
        np.testing.assert_array_equal(getattr(restored, key), getattr(talking, key))


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/talkinghead-pwned",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = "/tmp/talkinghead-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    payload = pickle.dumps({"motion": [_Exploit()]})
    with pytest.raises(InputError, match="forbidden global posix.system|forbidden global os.system"):
        template_from_pkl(payload)
    assert not os.path.exists(marker)
    with pytest.raises(InputError, match="forbidden global builtins.eval"):
        template_from_pkl(pickle.dumps({"motion": [eval]}))


def test_npz_is_validated():
    talking = load_template("talking")
    buffer = io.BytesIO()
    np.savez(buffer, scale=talking.scale, R=talking.R[:, :2], exp=talking.exp, t=talking.t, fps=20.0)
    with pytest.raises(InputError, match="R has shape"):
        template_from_npz(buffer.getvalue())
    with pytest.raises(InputError, match="not a readable .npz"):
        template_from_npz(b"garbage")


def test_resample_keeps_duration_and_rotations():
    talking = load_template("talking")
    at25 = talking.resample(25.0)
    assert at25.n_frames == 125 and at25.fps == 25.0
    np.testing.assert_allclose(at25.R[0], talking.R[0], atol=1e-5)
    eye = np.einsum("nij,nkj->nik", at25.R, at25.R)
    np.testing.assert_allclose(eye, np.broadcast_to(np.eye(3), eye.shape), atol=1e-5)


def test_load_template_accepts_an_official_pkl_path(tmp_path):
    path = tmp_path / "talking.pkl"
    path.write_bytes(official_pickle(load_template("talking")))
    assert load_template(str(path)).n_frames == 100
