"""Every kind of bad job is refused before any model runs, with a reason naming the problem."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from pydantic import ValidationError

from talkinghead.orchestrator.jobspec import JobSpec, check_inputs, describe_validation_error
from talkinghead.services.common.errors import InputError, NotFoundError
from tests import unprivileged


def make_spec(assets_dir, demo_face, demo_card, tmp_path, **changes) -> JobSpec:
    raw = {
        "face": str(demo_face),
        "audio": str(assets_dir / "speech_3s.wav"),
        "card": demo_card,
        "output": str(tmp_path / "out.mp4"),
    }
    raw.update(changes)
    return JobSpec.model_validate(raw)


def test_good_spec_decodes_audio(assets_dir, demo_face, demo_card, tmp_path):
    audio = check_inputs(make_spec(assets_dir, demo_face, demo_card, tmp_path)).audio
    assert audio.dtype == np.float32
    assert abs(len(audio) / 16000 - 3.2) < 0.05
    assert np.abs(audio).max() > 0.05  # real speech, not silence


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"face": "not_image.jpg"}, "not a decodable image"),
        ({"face": "missing.jpg"}, "does not exist"),
        ({"audio": "empty.wav"}, "is empty"),
        ({"audio": "not_audio.wav"}, "not decodable audio"),
        ({"audio": "missing.wav"}, "does not exist"),
    ],
)
def test_bad_files_are_named(assets_dir, demo_face, demo_card, tmp_path, change, message):
    key, name = next(iter(change.items()))
    spec = make_spec(assets_dir, demo_face, demo_card, tmp_path, **{key: str(assets_dir / name)})
    with pytest.raises(InputError, match=message) as info:
        check_inputs(spec)
    assert name in str(info.value)


def test_audio_over_the_limit(assets_dir, demo_face, demo_card, tmp_path):
    spec = make_spec(assets_dir, demo_face, demo_card, tmp_path, audio=str(assets_dir / "long.wav"))
    with pytest.raises(InputError, match="longer than the 10 s limit"):
        check_inputs(spec, max_audio_seconds=10)


def test_unknown_template(assets_dir, demo_face, demo_card, tmp_path):
    spec = make_spec(assets_dir, demo_face, demo_card, tmp_path, template="moonwalk")
    with pytest.raises(NotFoundError, match="unknown template 'moonwalk'.*talking"):
        check_inputs(spec)


def test_card_with_missing_fields_names_them(assets_dir, demo_face, demo_card, tmp_path):
    card = {k: v for k, v in demo_card.items() if k not in ("company", "skills")}
    with pytest.raises(ValidationError) as info:
        make_spec(assets_dir, demo_face, card, tmp_path)
    text = describe_validation_error(info.value)
    assert "card.company: Field required" in text
    assert "card.skills: Field required" in text


def test_blank_title_and_unknown_field_are_refused(assets_dir, demo_face, demo_card, tmp_path):
    with pytest.raises(ValidationError, match="title"):
        make_spec(assets_dir, demo_face, {**demo_card, "title": "  "}, tmp_path)
    with pytest.raises(ValidationError, match="salary"):
        make_spec(assets_dir, demo_face, {**demo_card, "salary": "1"}, tmp_path)


def test_unwritable_or_missing_output_folder(assets_dir, demo_face, demo_card, tmp_path):
    spec = make_spec(assets_dir, demo_face, demo_card, tmp_path,
                     output=str(tmp_path / "nowhere" / "out.mp4"))
    with pytest.raises(InputError, match="does not exist"):
        check_inputs(spec)
    # A folder the user may not write: checked as nobody when the tests run as root (CI).
    with unprivileged.shared_dir() as shared:
        audio = shared / "speech.wav"
        shutil.copy(assets_dir / "speech_3s.wav", audio)
        locked = shared / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        spec = make_spec(assets_dir, demo_face, demo_card, tmp_path, audio=str(audio),
                         output=str(locked / "o.mp4"))
        with pytest.raises(InputError, match=f"output folder '{locked}' is not writable"):
            unprivileged.call(check_inputs, spec)
        assert list(locked.iterdir()) == []


def test_output_must_be_mp4(assets_dir, demo_face, demo_card, tmp_path):
    spec = make_spec(assets_dir, demo_face, demo_card, tmp_path, output=str(tmp_path / "o.avi"))
    with pytest.raises(InputError, match=r"must end in \.mp4"):
        check_inputs(spec)


def test_paths_confined_to_the_configured_roots(assets_dir, demo_face, demo_card, tmp_path,
                                                monkeypatch):
    inside = tmp_path / "in"
    inside.mkdir()
    (inside / "speech.wav").write_bytes((assets_dir / "speech_3s.wav").read_bytes())
    (inside / "face.jpg").write_bytes(demo_face.read_bytes())
    out_root = tmp_path / "out"
    out_root.mkdir()
    monkeypatch.setenv("TALKINGHEAD_INPUT_ROOTS", str(inside))
    monkeypatch.setenv("TALKINGHEAD_OUTPUT_ROOTS", str(out_root))
    ok = make_spec(assets_dir, demo_face, demo_card, tmp_path, face=str(inside / "face.jpg"),
                   audio=str(inside / "speech.wav"), output=str(out_root / "v.mp4"))
    assert len(check_inputs(ok).audio) > 0
    escape = make_spec(assets_dir, demo_face, demo_card, tmp_path, face=str(inside / "face.jpg"),
                       audio=str(inside / ".." / ".." / "etc.wav"), output=str(out_root / "v.mp4"))
    with pytest.raises(InputError, match="audio file .* is outside the allowed folders"):
        check_inputs(escape)
    (inside / "link.jpg").symlink_to(demo_face)  # a symlink out of the root
    sneaky = make_spec(assets_dir, demo_face, demo_card, tmp_path, face=str(inside / "link.jpg"),
                       audio=str(inside / "speech.wav"), output=str(out_root / "v.mp4"))
    with pytest.raises(InputError, match="face image .* is outside"):
        check_inputs(sneaky)
    outside = make_spec(assets_dir, demo_face, demo_card, tmp_path, face=str(inside / "face.jpg"),
                        audio=str(inside / "speech.wav"), output=str(tmp_path / "v.mp4"))
    with pytest.raises(InputError, match="output .* is outside"):
        check_inputs(outside)


def test_oversized_face_refused_from_its_header(assets_dir, demo_card, tmp_path):
    from tests.test_servers import huge_png

    face = tmp_path / "huge.png"
    face.write_bytes(huge_png(8_000, 6_000))
    spec = JobSpec.model_validate({"face": str(face), "audio": str(assets_dir / "silence.wav"),
                                   "card": demo_card, "output": str(tmp_path / "o.mp4")})
    with pytest.raises(InputError, match="8000x6000 pixels, more than the 40000000 allowed"):
        check_inputs(spec)
