"""Build an ALTERNATE reference pack, to check that the reference TESTS are general.

    python -m tests.alternate_pack OUT_DIR [--salt talkinghead-b] [--seed 7]
    TH_REFERENCE_DIR=OUT_DIR CI=true pytest -m reference

What it is for: the packs' READMEs say acceptance runs on a hidden pack made the same way
with another salt, other pictures (of other sizes where a fixture names its cases by size),
another waveform of another length, another driving template. A test that passes on the
published pack only because of its particular inputs, salt, template or sizes fails on
this one. Run the reference tests against it after changing any of them.

What it is NOT: evidence of equivalence. The outputs below come from OUR modules and
functions (with the deterministic weights for the new salt), so our code passing here
proves nothing about the published architectures; the published pack does that.

Per file, what changes (file names and array keys as published; each file is checked
against the published one when written: same keys, same dtypes):

- ``liveportrait/appearance_feature_extractor.npz``, ``motion_extractor.npz``,
  ``spade_generator.npz``, ``warping_module.npz``, ``stitching_retargeting.npz``: other
  synthetic inputs (smooth random pictures, random features and keypoints) at the README's
  sizes; outputs from our F, M, G, W and MLPs.
- ``liveportrait/frame_e2e.npz``: another synthetic source, another template from the
  pack's ``templates/`` (default ``d5``, which also carries eye/lip ratios) and another
  template_frame; every intermediate from our networks and keypoint functions.
- ``wav2lip/speech_like.wav`` + ``audio.npz``: another waveform of another length (the
  published one cut, reversed and mixed with a shifted copy: a shorter stretch of digital
  silence elsewhere, or none with other ``--audio-*`` values); intermediates, mel and
  window starts from our front end. The 44.1 kHz arrays: see ``wav44100``.
- ``wav2lip/generator.npz``: another 12-frame synthetic clip of another frame size, other
  detector rectangles (one reaching the bottom edge), other mel windows of the new audio
  (the first, the most silent, one more, the tail); data path and output from ours.
- ``wav2lip/s3fd.npz``, ``gfpgan/retinaface.npz``: two other pictures each, of other sizes
  (the tags in the key names follow); raw outputs and post-processing from ours. RetinaFace
  keeps the README's deviations: ``body.bn1.running_var`` ×4096 and the per-image
  threshold rule (from 0.97 down by 0.01, the first leaving ≥ 30 boxes with no score
  within 1e-4); a picture whose NMS compares an IoU within 0.02 of 0.4 is replaced by
  the next, as the README's margins require.
- ``gfpgan/gfpgan.npz``, ``parsenet.npz``: other faces; outputs from our GFPGANv1Clean
  and ParseNet.
- ``gfpgan/gfpgan_pipeline.npz``: another frame of another size, the landmarks scaled to
  it and moved by up to ±3 px; affine, crop, restored face, masks and pasted frames.

OpenCV: the packs were made with OpenCV 5 and the project runs 4. Run this tool with an
OpenCV 5 first on the path (``pip install --target DIR opencv-python-headless==5.*`` and
``PYTHONPATH=DIR``) and every OpenCV step in it is OpenCV 5's, as in the pack: the
pipeline's affine and crop are then the official calls themselves
(``estimateAffinePartial2D(LMEDS)``, ``warpAffine``) rather than ours, so the alignment
tests' bounds are tried on new inputs. Under OpenCV 4 they come from our face_align.

Copied unchanged, and why:

- the READMEs, every ``*.manifest.json`` and ``liveportrait/templates/``: the procedure's
  fixed inputs (names, shapes, the official templates).
- ``audio.npz``: ``mel_basis`` (librosa's filterbank, independent of salt and waveform:
  the test of ours against it stays a test against librosa); ``fps_values``, ``fps_tags``
  and ``n_mel_90s`` (the README's fixed cases; their window starts are recomputed); and,
  only when resampy is not installed, ``wav44100_int16``, ``wav44100_loaded_16k`` and
  ``mel_from_44100`` (resampy ``kaiser_best``'s output, independent of the salt: the
  resampling test stays a test against resampy).
- ``liveportrait/driving_options.npz``: another synthetic source (and the published
  203 landmarks, jittered), two other templates (default ``d5`` and ``shy``) at other
  frames, every published variant name with the templates renamed; keypoints from our M,
  stitching and lip MLPs and driving.py.
- ``musetalk/``: no test reads it; each file carries its own salt, so a copy stays
  self-consistent.
"""

from __future__ import annotations

import argparse
import shutil
import wave
import zlib
from pathlib import Path

import cv2
import numpy as np
import torch

from talkinghead.services.common.checkpoints import load_strict
from talkinghead.services.common.deterministic_weights import Manifest, deterministic_state_dict

PUBLISHED_SALT = "talkinghead-a"
OPENCV_MAJOR = int(cv2.__version__.split(".")[0])
COPIED_FILES = (
    "README.md",
    "gfpgan/README.md", "liveportrait/README.md", "wav2lip/README.md",
)


# ---- helpers -----------------------------------------------------------------------------

class Pack:
    """The published pack (read) and the alternate one (written, checked against it)."""

    def __init__(self, published: Path, out: Path, salt: str, seed: int) -> None:
        self.published, self.out, self.salt, self.seed = Path(published), Path(out), salt, seed

    def rng(self, part: str) -> np.random.Generator:
        """One stream per part, so that building some parts alone gives the same inputs."""
        return np.random.default_rng([self.seed, zlib.crc32(part.encode())])

    def read(self, relative: str) -> dict[str, np.ndarray]:
        with np.load(self.published / relative, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    def manifest(self, relative: str) -> Manifest:
        return Manifest.load(self.published / relative)

    def weights(self, relative: str, prefix: str = "") -> dict[str, torch.Tensor]:
        return deterministic_state_dict(self.manifest(relative), self.salt, prefix)

    def write(self, relative: str, arrays: dict[str, np.ndarray],
              renamed: dict[str, str] | None = None) -> None:
        """Save with the published file's keys (``renamed``: published tag → ours), in its
        order, refusing any missing, extra or retyped array."""
        published = self.read(relative)
        names = {}
        for key in published:
            ours = key
            for old, new in (renamed or {}).items():
                ours = ours.replace(old, new)
            names[key] = ours
        missing = sorted(set(names.values()) - set(arrays))
        extra = sorted(set(arrays) - set(names.values()))
        if missing or extra:
            raise ValueError(f"{relative}: missing {missing}, extra {extra}")
        out = {}
        for key, ours in names.items():
            value = np.asarray(arrays[ours])
            if value.dtype.kind != published[key].dtype.kind:
                raise ValueError(f"{relative}:{ours} is {value.dtype}, published {published[key].dtype}")
            if value.dtype.kind != "U":
                value = value.astype(published[key].dtype)
            out[ours] = value
        path = self.out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **out)
        print(f"wrote {relative}")


def smooth_picture(rng: np.random.Generator, height: int, width: int, cell: int = 24) -> np.ndarray:
    """A smooth random colour picture, uint8 [H, W, 3] (the packs' kind of synthetic frame)."""
    small = rng.integers(0, 256, (max(2, height // cell + 2), max(2, width // cell + 2), 3))
    big = cv2.resize(small.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(cv2.GaussianBlur(big, (0, 0), cell / 4), 0, 255).astype(np.uint8)


def face_picture(rng: np.random.Generator, height: int, width: int, centre: tuple[float, float],
                 size: float, noise: float = 4.0, background: np.ndarray | None = None) -> np.ndarray:
    """A smooth background (``background`` or a new one) with a blurred oval face (eyes,
    nose, mouth), uint8 BGR."""
    if background is None:
        background = smooth_picture(rng, height, width)
    img = background.astype(np.float32)
    cx, cy = centre
    skin = (120 + rng.uniform(-20, 20), 150 + rng.uniform(-20, 20), 215 + rng.uniform(-20, 20))
    cv2.ellipse(img, (int(cx), int(cy)), (int(size * 0.42), int(size * 0.55)), 0, 0, 360, skin, -1)
    dark = (50.0, 40.0, 40.0)
    for dx in (-0.17, 0.17):
        cv2.circle(img, (int(cx + dx * size), int(cy - 0.1 * size)), max(1, int(0.05 * size)), dark, -1)
    cv2.line(img, (int(cx), int(cy - 0.02 * size)), (int(cx - 0.03 * size), int(cy + 0.12 * size)),
             (90.0, 110.0, 170.0), max(1, int(0.02 * size)))
    cv2.ellipse(img, (int(cx), int(cy + 0.25 * size)), (int(0.14 * size), int(0.04 * size)), 0, 0, 360,
                (60.0, 50.0, 160.0), -1)
    img = cv2.GaussianBlur(img, (0, 0), max(0.8, size / 80))
    img += rng.normal(0, noise, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def unit_image(picture: np.ndarray) -> np.ndarray:
    """uint8 HWC RGB → float32 [1, 3, H, W] in 0..1."""
    return (picture.astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy()


def _tag(height: int, width: int) -> str:
    return f"{height}x{width}"


# ---- LivePortrait ------------------------------------------------------------------------

def liveportrait(pack: Pack, template: str, template_frame: int) -> None:
    from talkinghead.services.motion.keypoints import (
        DrivingFrame,
        KeypointInfo,
        apply_stitching,
        driving_keypoints,
    )
    from talkinghead.services.motion.networks.appearance_feature_extractor import (
        AppearanceFeatureExtractor,
        appearance_keys_from_official,
    )
    from talkinghead.services.motion.networks.motion_extractor import (
        MotionExtractor,
        motion_keys_from_official,
    )
    from talkinghead.services.motion.networks.spade_generator import (
        SPADEGenerator,
        spade_keys_from_official,
    )
    from talkinghead.services.motion.networks.stitching_retargeting import (
        load_stitching_retargeting,
        official_layout_from_prefixed,
    )
    from talkinghead.services.motion.networks.warping_network import (
        WarpingNetwork,
        warping_keys_from_official,
    )
    from talkinghead.services.motion.template import template_from_npz

    rng, salt = pack.rng("liveportrait"), pack.salt

    def net(module, name, key_map):
        state = key_map(pack.weights(f"liveportrait/{name}.manifest.json"))
        return load_strict(module, state, name).eval()

    F = net(AppearanceFeatureExtractor(), "appearance_feature_extractor", appearance_keys_from_official)
    M = net(MotionExtractor(), "motion_extractor", motion_keys_from_official)
    W = net(WarpingNetwork(), "warping_module", warping_keys_from_official)
    G = net(SPADEGenerator(), "spade_generator", spade_keys_from_official)
    stitching, lip, eye = load_stitching_retargeting(official_layout_from_prefixed(
        pack.weights("liveportrait/stitching_retargeting_module.manifest.json")))

    with torch.inference_mode():
        x = unit_image(smooth_picture(rng, 128, 128, 16)[..., ::-1])
        pack.write("liveportrait/appearance_feature_extractor.npz",
                   {"salt": np.array(salt), "input": x, "output": F(torch.from_numpy(x)).numpy()})

        x = unit_image(face_picture(rng, 64, 64, (33, 31), 40, 3)[..., ::-1])
        heads = M(torch.from_numpy(x))
        pack.write("liveportrait/motion_extractor.npz",
                   {"salt": np.array(salt), "input": x,
                    **{f"output_{k}": v.numpy() for k, v in vars(heads).items()}})

        feature = (rng.standard_normal((1, 32, 16, 32, 32)) * 0.8 - 0.1).astype(np.float32)
        kp_source = (rng.standard_normal((1, 21, 3)) * 0.33).astype(np.float32)
        kp_driving = (kp_source + rng.standard_normal((1, 21, 3)) * 0.06).astype(np.float32)
        warped = W(*(torch.from_numpy(a) for a in (feature, kp_source, kp_driving)))
        pack.write("liveportrait/warping_module.npz", {
            "salt": np.array(salt), "feature_3d": feature, "kp_source": kp_source,
            "kp_driving": kp_driving, "output_occlusion_map": warped.occlusion_map.numpy(),
            "output_deformation": warped.deformation.numpy(), "output_out": warped.out.numpy()})

        feature = rng.standard_normal((1, 256, 16, 16)).astype(np.float32)
        pack.write("liveportrait/spade_generator.npz", {
            "salt": np.array(salt), "feature": feature, "output": G(torch.from_numpy(feature)).numpy()})

        mlps = {}
        for role, mlp, width in (("stitching", stitching, 126), ("lip", lip, 65), ("eye", eye, 66)):
            inputs = (rng.standard_normal((2, width)) * 0.3).astype(np.float32)
            mlps[f"{role}_input"] = inputs
            mlps[f"{role}_output"] = mlp(torch.from_numpy(inputs)).numpy()
        pack.write("liveportrait/stitching_retargeting.npz", {"salt": np.array(salt), **mlps})

        # frame_e2e: another source, another template and frame
        motion = template_from_npz(pack.published / f"liveportrait/templates/{template}.npz", template)
        if not 0 < template_frame < motion.n_frames:
            raise SystemExit(f"template {template} has {motion.n_frames} frames; frame {template_frame}?")

        def frame(k: int) -> DrivingFrame:
            return DrivingFrame(*(torch.from_numpy(getattr(motion, a)[k][None])
                                  for a in ("R", "exp", "scale", "t")))

        source = unit_image(face_picture(rng, 256, 256, (124, 134), 150, 3)[..., ::-1])
        heads = M(torch.from_numpy(source))
        info = KeypointInfo.from_heads(heads)
        x_s = info.keypoints()
        f_s = F(torch.from_numpy(source))
        x_d, parts = driving_keypoints(info, frame(template_frame), frame(0), relative=True)
        x_d_stitched, delta = apply_stitching(x_s, x_d, stitching)
        warped = W(f_s, x_s, x_d_stitched)
        out = G(warped.out)
        e2e = {
            "salt": np.array(salt), "template": np.array(template),
            "template_frame": np.int64(template_frame), "source": source,
            **{f"source_kp_info_{k}": v.numpy() for k, v in vars(heads).items()},
            "pitch_deg": info.pitch.numpy(), "yaw_deg": info.yaw.numpy(), "roll_deg": info.roll.numpy(),
            "R_s": info.R.numpy(), "x_c_s": info.canonical.numpy(), "x_s": x_s.numpy(),
            "f_s_shape": np.array(f_s.shape, dtype=np.int64),
            "f_s_sample_every_97": f_s.reshape(-1)[::97].numpy(),
            "f_s_mean": np.float64(f_s.mean()), "f_s_std": np.float64(f_s.std()),
            "R_d0": motion.R[0][None], "R_di": motion.R[template_frame][None],
            **{k: v.numpy() for k, v in parts.items()},
            "x_d": x_d.numpy(), "stitching_delta": delta.numpy(), "x_d_stitched": x_d_stitched.numpy(),
            "occlusion_map": warped.occlusion_map.numpy(), "deformation": warped.deformation.numpy(),
            "warp_out_shape": np.array(warped.out.shape, dtype=np.int64),
            "warp_out_sample_every_97": warped.out.reshape(-1)[::97].numpy(),
            "warp_out_std": np.float64(warped.out.std()), "out": out.numpy(),
        }
        pack.write("liveportrait/frame_e2e.npz", e2e)


def liveportrait_driving_options(pack: Pack, templates: tuple[str, str]) -> None:
    """driving_options.npz with another source, other templates and frames (every published
    variant, the published template names replaced by ``templates``)."""
    from talkinghead.services.motion.driving import DrivingSettings, drive_batch, prepare_source
    from talkinghead.services.motion.keypoints import DrivingFrame, KeypointInfo, lip_open_ratio
    from talkinghead.services.motion.networks.motion_extractor import (
        MotionExtractor,
        motion_keys_from_official,
    )
    from talkinghead.services.motion.networks.stitching_retargeting import (
        load_stitching_retargeting,
        official_layout_from_prefixed,
    )
    from talkinghead.services.motion.template import template_from_npz

    relative = "liveportrait/driving_options.npz"
    published = pack.read(relative)
    names = [str(v) for v in published["variants"]]
    old = list(dict.fromkeys(n.split("|")[0] for n in names))
    if len(old) != len(templates):
        raise SystemExit(f"{relative}: the published file has {len(old)} templates; give as many")
    renamed = {f"{a}|": f"{b}|" for a, b in zip(old, templates, strict=True)}
    rng = pack.rng("driving_options")
    M = load_strict(MotionExtractor(), motion_keys_from_official(
        pack.weights("liveportrait/motion_extractor.manifest.json")), "motion_extractor").eval()
    stitching, lip, _ = load_stitching_retargeting(official_layout_from_prefixed(
        pack.weights("liveportrait/stitching_retargeting_module.manifest.json")))
    source_rgb = face_picture(rng, 256, 256, (126, 132), 148, 3)[..., ::-1].copy()
    landmarks = (published["source_landmarks_203"]
                 + rng.normal(0, 0.6, published["source_landmarks_203"].shape)).astype(np.float32)
    lip_ratio = float(lip_open_ratio(landmarks)[0])
    arrays: dict[str, np.ndarray] = {
        "salt": np.array(pack.salt), "source_rgb": source_rgb, "source_landmarks_203": landmarks,
        "lip_normalize_threshold": published["lip_normalize_threshold"],
        "provenance": np.array([f"alternate pack: our driving.py, salt {pack.salt}"]),
    }
    motions = {t: template_from_npz(pack.published / f"liveportrait/templates/{t}.npz", t)
               for t in templates}

    def frames_of(motion, index) -> DrivingFrame:
        return DrivingFrame(*(torch.from_numpy(np.ascontiguousarray(getattr(motion, a)[index]))
                              for a in ("R", "exp", "scale", "t")))

    with torch.inference_mode():
        info = KeypointInfo.from_heads(M(torch.from_numpy(unit_image(source_rgb))))
        arrays["x_s"] = info.keypoints().numpy()
        ours = []
        for name in names:
            template, option, region, normlip, mult = name.split("|")
            for a, b in renamed.items():
                template = (template + "|").replace(a, b)[:-1]
            motion = motions[template]
            n = motion.n_frames
            index = np.unique(np.array([0, 2, 5, n // 4, (2 * n) // 3, n - 1]).clip(0, n - 1))
            settings = DrivingSettings(region=region, option=option,
                                       multiplier=float(mult.removeprefix("mult=")),
                                       normalize_lip=normlip == "normlip=1")
            first = frames_of(motion, slice(0, 1))
            source = prepare_source(info, first, settings, lip_ratio=lip_ratio, lip_mlp=lip)
            x_d = drive_batch(source, frames_of(motion, index), first, settings, stitching)
            new_name = "|".join([template, option, region, normlip, mult])
            ours.append(new_name)
            arrays[f"{new_name}|frames"] = index.astype(np.int64)
            arrays[f"{new_name}|x_d"] = x_d.numpy()
    arrays["variants"] = np.array(ours)
    pack.write(relative, arrays, renamed=renamed)


# ---- Wav2Lip -----------------------------------------------------------------------------

def new_waveform(published: np.ndarray, length: int, shift: int) -> np.ndarray:
    """The published waveform's first ``length`` samples reversed, plus 0.6× a copy shifted by
    ``shift``, scaled to fit int16: where both were digital silence it stays exactly 0."""
    a = published[:length][::-1].astype(np.float64)
    b = published[shift:shift + length].astype(np.float64)
    mixed = a + 0.6 * b
    mixed *= 32000 / max(1.0, np.abs(mixed).max())
    return np.round(mixed).astype(np.int16)


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())


def wav2lip_audio(pack: Pack, length: int, shift: int) -> dict[str, np.ndarray]:
    from talkinghead.services.lipsync.mel import (
        amplitude_to_normalized_db,
        mel_window_starts,
        mel_windows,
        melspectrogram,
        preemphasis,
        stft_magnitude,
    )

    published = pack.read("wav2lip/audio.npz")
    wav_int16 = new_waveform(published["wav_int16"], length, shift)
    write_wav(pack.out / "wav2lip/speech_like.wav", wav_int16)
    wav = wav_int16.astype(np.float32) / np.float32(32768)
    pre = preemphasis(wav)
    magnitude = stft_magnitude(pre)
    basis = published["mel_basis"]  # librosa's, copied (salt- and waveform-independent)
    amplitude = basis @ magnitude
    mel = amplitude_to_normalized_db(amplitude)
    assert np.abs(mel - melspectrogram(wav)).max() <= 1e-5
    arrays = {
        "salt": np.array(pack.salt), "sample_rate": np.int64(16000), "wav_int16": wav_int16,
        "wav_float32": wav, "preemphasized": pre, "stft_magnitude": magnitude, "mel_basis": basis,
        "mel_amplitude": amplitude, "mel": mel,
        "n_mel_90s": published["n_mel_90s"], "fps_values": published["fps_values"],
        "fps_tags": published["fps_tags"],
    }
    arrays |= wav44100(published, length, shift, basis)
    for tag, fps in zip(published["fps_tags"], published["fps_values"], strict=True):
        arrays[f"chunk_starts_90s_fps{tag}"] = np.array(
            mel_window_starts(int(published["n_mel_90s"]), float(fps)), dtype=np.int64)
        if f"num_chunks_fps{tag}" in published:
            starts = mel_window_starts(mel.shape[1], float(fps))
            arrays[f"chunk_starts_fps{tag}"] = np.array(starts, dtype=np.int64)
            arrays[f"num_chunks_fps{tag}"] = np.int64(len(starts))
    windows = mel_windows(mel, 25.0)
    arrays["chunks_fps25_first4"] = windows[:4]
    arrays["chunk_fps25_last"] = windows[-1]
    pack.write("wav2lip/audio.npz", arrays)
    silent = int((wav_int16 == 0).sum())
    print(f"  waveform {length} samples ({length / 16000:.3f} s), {silent} zero samples")
    return arrays


def wav44100(published: dict[str, np.ndarray], length: int, shift: int,
             basis: np.ndarray) -> dict[str, np.ndarray]:
    """The 44.1 kHz case: with resampy installed, another 44.1 kHz waveform (the published
    one cut, reversed and mixed like the 16 kHz one) loaded exactly as librosa 0.7 does
    (resampy kaiser_best, cut to ceil(n·16000/44100), float32; this reproduces the
    published ``wav44100_loaded_16k`` bit for bit), its mel from ours. Without resampy the
    three arrays are copied: they do not depend on the salt."""
    keys = ("wav44100_int16", "wav44100_loaded_16k", "mel_from_44100")
    try:
        import resampy
    except ImportError:
        print("  resampy not installed: the 44.1 kHz arrays are the published ones")
        return {k: published[k] for k in keys}
    from talkinghead.services.lipsync.mel import amplitude_to_normalized_db, preemphasis, stft_magnitude

    ratio = 44100 / 16000
    wav = new_waveform(published["wav44100_int16"], round(length * ratio), round(shift * ratio))
    x = wav.astype(np.float32) / np.float32(32768)
    loaded = resampy.resample(x, 44100, 16000, filter="kaiser_best", axis=-1)
    n = int(np.ceil(len(x) * 16000 / 44100))
    loaded = np.ascontiguousarray(np.pad(loaded[:n], (0, max(0, n - len(loaded)))), dtype=np.float32)
    mel = amplitude_to_normalized_db(basis @ stft_magnitude(preemphasis(loaded)))
    print(f"  44.1 kHz waveform {len(wav)} samples, resampled by resampy {resampy.__version__}")
    return dict(zip(keys, (wav, loaded, mel), strict=True))


def wav2lip_generator(pack: Pack, audio: dict[str, np.ndarray], height: int, width: int) -> None:
    from talkinghead.services.lipsync import face_window as fw
    from talkinghead.services.lipsync.networks.wav2lip import Wav2Lip

    rng = pack.rng("generator")
    n_frames = 12
    frames, rects = [], []
    background = smooth_picture(rng, height, width)  # one scene, the face moves in it
    for i in range(n_frames):
        cx = width * 0.47 + 6 * np.sin(i / 2.0) + rng.uniform(-2, 2)
        cy = height * 0.45 + 4 * np.cos(i / 3.0) + rng.uniform(-2, 2)
        size = 0.5 * height + rng.uniform(-4, 4)
        frames.append(face_picture(rng, height, width, (cx, cy), size, 3, background))
        box = [cx - 0.45 * size, cy - 0.62 * size, cx + 0.45 * size, cy + 0.6 * size]
        rects.append([int(round(v + rng.uniform(-3, 3))) for v in box])
    rects[7][3] = height - 3  # reaches the bottom edge once padded
    frames_bgr = np.stack(frames)
    rects = np.array(rects, dtype=np.int64)
    pads = np.array(fw.DEFAULT_PADS, dtype=np.int64)

    padded = fw.pad_boxes(rects, height, width, pads=tuple(pads))
    smoothed = fw.crop_coords(fw.smooth_boxes(padded))
    mel = audio["mel"]
    starts = audio["chunk_starts_fps25"]
    n_windows = len(starts)
    floor_columns = [(mel[:, s:s + 16] == -4).all(axis=0).sum() for s in starts]
    silent = int(np.argmax(floor_columns)) if max(floor_columns) > 0 else n_windows // 3
    middle = min(n_windows - 2, max(silent + 7, (2 * n_windows) // 3))
    chunk_index = np.array([0, silent, middle, n_windows - 1], dtype=np.int64)
    assert len(set(chunk_index.tolist())) == 4, chunk_index
    others = sorted(set(rng.choice(np.arange(1, n_windows - 1), 16, replace=False).tolist())
                    - set(chunk_index.tolist()))[:8]
    batch = [fw.source_frame_index(i, n_frames) for i in range(4)]
    coords = smoothed[batch]
    faces = np.stack([fw.crop_face(frames_bgr[i], smoothed[i]) for i in batch])
    face_input = fw.network_faces_from_bgr(faces)
    mel_input = fw.network_mel([mel[:, s:s + 16] for s in starts[chunk_index]])

    state = pack.weights("wav2lip/wav2lip.manifest.json")
    net = load_strict(Wav2Lip(), state, "wav2lip").eval()
    with torch.inference_mode():
        output = net(mel_input, face_input).numpy()
    out_u8 = fw.network_output_to_uint8_bgr(output)
    pasted = np.stack([fw.paste_face(frames_bgr[i], p, c)
                       for i, p, c in zip(batch, out_u8, coords, strict=True)])
    pack.write("wav2lip/generator.npz", {
        "salt": np.array(pack.salt), "mel_input": mel_input.numpy(), "face_input": face_input.numpy(),
        "output": output, "mel_chunk_index": chunk_index, "mel_chunk_start": starts[chunk_index],
        "faces_uint8_bgr": faces, "output_uint8_bgr_hwc": out_u8, "pasted_frames_bgr": pasted,
        "coords_y1y2x1x2": coords, "frames_bgr": frames_bgr, "detector_rects_x1y1x2y2": rects,
        "pads_top_bottom_left_right": pads, "boxes_padded_x1y1x2y2": padded,
        "boxes_smoothed_y1y2x1x2": smoothed,
        "datagen_mel_chunk_index": np.concatenate([chunk_index, others]).astype(np.int64),
    })


def s3fd(pack: Pack, sizes: list[tuple[int, int]]) -> None:
    from talkinghead.services.lipsync.networks.s3fd import S3FD, s3fd_keys_from_official
    from talkinghead.services.lipsync.s3fd_detect import (
        best_face_box,
        decode_detections,
        preprocess,
        select_detections,
    )

    rng = pack.rng("s3fd")
    net = S3FD()
    net.load_state_dict(s3fd_keys_from_official(pack.weights("wav2lip/s3fd.manifest.json")), strict=True)
    net.eval()
    names = [f"{kind}{level}" for level in range(1, 7) for kind in ("cls", "reg")]
    arrays: dict[str, np.ndarray] = {"salt": np.array(pack.salt)}
    for height, width in sizes:
        tag = _tag(height, width)
        image = face_picture(rng, height, width, (width * 0.55, height * 0.5), 0.6 * height)
        x = preprocess(image, "bgr")
        with torch.inference_mode():
            maps = net(x)
        candidates = decode_detections(maps)[0]
        detections = select_detections(candidates)
        box = best_face_box(detections)
        assert box is not None, f"{tag}: no detection"
        arrays |= {f"image_bgr_{tag}": image, f"input_{tag}": x.numpy(),
                   **{f"out_{tag}_{n}": m.numpy() for n, m in zip(names, maps, strict=True)},
                   f"detections_{tag}": detections, f"first_box_x1y1x2y2_{tag}": np.array(box),
                   f"candidates_before_nms_{tag}": candidates}
        print(f"  s3fd {tag}: {len(candidates)} candidates, {len(detections)} detections, box {box}")
    published = ("128x128", "240x320")
    pack.write("wav2lip/s3fd.npz", arrays,
               renamed={f"_{p}": f"_{_tag(*s)}" for p, s in zip(published, sizes, strict=True)})


# ---- GFPGAN ------------------------------------------------------------------------------

def retinaface_state(pack: Pack) -> dict[str, torch.Tensor]:
    """The detector's weights with the README's deviation: bn1's running variance × 4096."""
    state = pack.weights("gfpgan/retinaface_resnet50.manifest.json")
    name = "body.bn1.running_var"
    rng = np.random.default_rng(zlib.crc32(f"{pack.salt}:{name}".encode()))
    state[name] = torch.from_numpy(((0.5 + rng.random(tuple(state[name].shape))) * 4096).astype(np.float32))
    return state


def threshold_by_rule(scores: np.ndarray) -> np.float32:
    """From 0.97 down by 0.01: the first threshold leaving ≥ 30 boxes, none within 1e-4."""
    for k in range(97):
        threshold = np.float32(round(0.97 - 0.01 * k, 2))
        above = int(np.sum(scores > threshold))
        if above >= 30 and np.min(np.abs(scores.astype(np.float64) - float(threshold))) >= 1e-4:
            return threshold
    raise ValueError("no threshold fits the rule")


def nms_margin(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    """The smallest |IoU − threshold| over every pair greedy NMS compares."""
    x1, y1, x2, y2 = boxes.T.astype(np.float64)
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    margin = np.inf
    while order.size > 1:
        i, rest = order[0], order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        iou = w * h / (areas[i] + areas[rest] - w * h)
        margin = min(margin, float(np.min(np.abs(iou - threshold))))
        order = rest[~(iou > threshold)]
    return margin


def retinaface(pack: Pack, sizes: list[tuple[int, int]]) -> None:
    from talkinghead.services.restore.networks.retinaface import (
        RetinaFace,
        retinaface_keys_from_official,
    )
    from talkinghead.services.restore.retinaface_detect import (
        NMS_IOU,
        PIXEL_MEAN_BGR,
        decode_boxes,
        preprocess,
        prior_boxes,
        select_detections,
    )

    rng = pack.rng("retinaface")
    net = RetinaFace()
    net.load_state_dict(retinaface_keys_from_official(retinaface_state(pack)), strict=True)
    net.eval()
    nms_threshold = np.float32(NMS_IOU)
    arrays: dict[str, np.ndarray] = {"salt": np.array(pack.salt),
                                     "mean_bgr": np.array(PIXEL_MEAN_BGR, dtype=np.float32),
                                     "nms_threshold": nms_threshold}
    for height, width in sizes:
        tag = _tag(height, width)
        for attempt in range(200):
            image = smooth_picture(rng, height, width, 20)
            x = preprocess(image, "bgr")
            with torch.inference_mode():
                out = net(x)
                loc, conf, landmarks = out.loc, out.conf, out.landmarks
            priors = prior_boxes(height, width)
            scores = conf[0, :, 1].numpy()
            try:
                threshold = threshold_by_rule(scores)
            except ValueError:
                continue
            dets = select_detections(loc[0], conf[0], landmarks[0], priors, (height, width),
                                     float(threshold), float(nms_threshold))
            chosen = scores > threshold
            boxes = (decode_boxes(loc[0], priors, net.config.variances)
                     * torch.tensor([width, height] * 2, dtype=torch.float32)).numpy()[chosen]
            margin = nms_margin(boxes, scores[chosen], float(nms_threshold))
            gap = float(np.min(np.abs(scores.astype(np.float64) - float(threshold))))
            if margin >= 0.02:
                break
            print(f"  retinaface {tag}: attempt {attempt} IoU margin {margin:.3g} < 0.02, next picture")
        else:
            raise SystemExit(f"retinaface {tag}: no picture met the README's margins")
        print(f"  retinaface {tag}: threshold {threshold:.2f}, {int(chosen.sum())} boxes, "
              f"{len(dets)} detections, score gap {gap:.2g}, IoU margin {margin:.3g}")
        arrays |= {f"img_{tag}_bgr_u8": image, f"input_{tag}": x.numpy(), f"loc_{tag}": loc.numpy(),
                   f"conf_{tag}": conf.numpy(), f"landmarks_{tag}": landmarks.numpy(),
                   f"priors_{tag}": priors.numpy(), f"dets_{tag}": dets,
                   f"conf_threshold_{tag}": threshold, f"num_pre_nms_{tag}": np.int64(chosen.sum())}
    published = ("320x320", "240x320")
    pack.write("gfpgan/retinaface.npz", arrays,
               renamed={f"_{p}": f"_{_tag(*s)}" for p, s in zip(published, sizes, strict=True)})


def gfpgan(pack: Pack, frame_size: tuple[int, int]) -> None:
    from talkinghead.services.restore import face_align as fa
    from talkinghead.services.restore.face_parsing import parse, preprocess
    from talkinghead.services.restore.face_tensors import face_to_input, output_to_face
    from talkinghead.services.restore.networks.gfpgan import GFPGANv1Clean
    from talkinghead.services.restore.networks.parsenet import ParseNet, parsenet_keys_from_official

    rng = pack.rng("gfpgan")
    restorer = load_strict(GFPGANv1Clean(), pack.weights("gfpgan/gfpganv1clean.manifest.json"),
                           "gfpgan").eval()
    parser = ParseNet()
    parser.load_state_dict(parsenet_keys_from_official(pack.weights("gfpgan/parsenet.manifest.json")),
                           strict=True)
    parser.eval()

    # parsenet.npz
    face = face_picture(rng, 256, 256, (130, 132), 170)
    x = preprocess(face, "bgr")
    with torch.inference_mode():
        parsed = parser(x)
        out_mask, out_img = parsed.mask, parsed.image
    pack.write("gfpgan/parsenet.npz", {
        "salt": np.array(pack.salt), "input_bgr_u8": face, "input": x.numpy(),
        "out_mask": out_mask.numpy(), "out_img": out_img.numpy(),
        "argmax": out_mask.argmax(dim=1).to(torch.uint8).numpy()})

    # gfpgan.npz
    face1 = face_picture(rng, 512, 512, (254, 300), 300)
    face2 = np.ascontiguousarray(face_picture(rng, 512, 512, (262, 290), 280)[:, ::-1])
    with torch.inference_mode():
        single = restorer(face_to_input(face1, "bgr"), return_rgb=True)
        both = restorer(face_to_input(np.stack([face1, face2]), "bgr"))
    sizes = (8, 16, 32, 64, 128, 256, 512)
    pack.write("gfpgan/gfpgan.npz", {
        "salt": np.array(pack.salt), "input_bgr_u8": face1, "input": face_to_input(face1, "bgr").numpy(),
        "out_image": single.image.numpy(), "restored_bgr_u8": output_to_face(single.image, "bgr")[0],
        "style_code": single.style_code.numpy(), "input2_bgr_u8": face2,
        "input2": face_to_input(face2, "bgr").numpy(), "out_image_batch2": both.image.numpy(),
        "noise_mode": np.array("stored"), "weight_arg": np.float32(0.5),
        **{f"out_rgb_{s}": r.numpy() for s, r in zip(sizes, single.rgbs, strict=True)}})

    # gfpgan_pipeline.npz: another frame size, the landmarks scaled to it and moved
    published = pack.read("gfpgan/gfpgan_pipeline.npz")
    height, width = frame_size
    ph, pw = published["frame_bgr_u8"].shape[:2]
    landmarks = published["landmarks_5"] * np.array([width / pw, height / ph])
    landmarks = landmarks + rng.uniform(-3, 3, landmarks.shape)
    centre = landmarks.mean(axis=0)
    frame = face_picture(rng, height, width, (centre[0], centre[1] - 5),
                         2.2 * float(np.linalg.norm(landmarks[1] - landmarks[0])))
    if OPENCV_MAJOR >= 5:  # the pack's own calls (gfpgan/README.md, step 3)
        template = fa.FFHQ_TEMPLATE_512.astype(np.float64)
        matrix = cv2.estimateAffinePartial2D(landmarks, template, method=cv2.LMEDS)[0]
        crop = cv2.warpAffine(frame, matrix, (512, 512), borderMode=cv2.BORDER_CONSTANT,
                              borderValue=(135, 133, 132))
    else:
        matrix = fa.alignment_matrix(landmarks)
        crop = fa.warp_face(frame, matrix, "bgr")
    with torch.inference_mode():
        restored = output_to_face(restorer(face_to_input(crop, "bgr")).image, "bgr")[0]
    classes = parse(parser, restored, "bgr")[0]
    arrays = {"salt": np.array(pack.salt), "frame_bgr_u8": frame, "landmarks_5": landmarks,
              "affine_matrix": matrix, "cropped_face_bgr_u8": crop, "restored_face_bgr_u8": restored}
    for up in (1, 2):
        inverse = fa.inverse_matrix(matrix, up)
        background = fa.upscaled_background(frame, up)
        h, w = background.shape[:2]
        arrays[f"inverse_affine_up{up}"] = inverse
        arrays[f"soft_mask_up{up}_parse"] = fa.parse_soft_mask(classes, inverse, h, w).astype(np.float32)
        arrays[f"soft_mask_up{up}_square"] = fa.square_soft_mask(inverse, h, w, up)[1]
        arrays[f"output_up{up}_parse_bgr_u8"] = fa.paste_face(background, restored, inverse, classes, up)
        arrays[f"output_up{up}_square_bgr_u8"] = fa.paste_face(background, restored, inverse, None, up)
    pack.write("gfpgan/gfpgan_pipeline.npz", arrays)


# ---- main --------------------------------------------------------------------------------

def copy_fixed_files(published: Path, out: Path) -> None:
    """READMEs, manifests, templates and the files no test reads, unchanged."""
    for path in sorted(published.rglob("*")):
        relative = path.relative_to(published)
        if path.is_dir():
            continue
        if (str(relative) in COPIED_FILES or path.name.endswith(".manifest.json")
                or relative.parts[:2] == ("liveportrait", "templates") or relative.parts[0] == "musetalk"):
            target = out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def size(text: str) -> tuple[int, int]:
    height, width = (int(v) for v in text.lower().split("x"))
    return height, width


def main(argv: list[str] | None = None) -> None:
    from tests.reference_pack import reference_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--salt", default="talkinghead-b")
    parser.add_argument("--seed", type=int, default=7, help="inputs' random seed")
    parser.add_argument("--published", type=Path, default=None, help="default: TH_REFERENCE_DIR")
    parser.add_argument("--template", default="d5")
    parser.add_argument("--template-frame", type=int, default=101)
    parser.add_argument("--driving-templates", nargs=2, default=["d5", "shy"],
                        help="driving_options.npz's two templates")
    parser.add_argument("--audio-samples", type=int, default=41_337, help="new waveform length")
    parser.add_argument("--audio-shift", type=int, default=5_000)
    parser.add_argument("--s3fd-sizes", type=size, nargs=2, default=[(160, 160), (224, 288)])
    parser.add_argument("--retinaface-sizes", type=size, nargs=2, default=[(288, 288), (200, 296)])
    parser.add_argument("--wav2lip-frame", type=size, default=(216, 272))
    parser.add_argument("--pipeline-frame", type=size, default=(240, 304))
    parser.add_argument("--only", nargs="*", default=None,
                        help="liveportrait, audio, generator, s3fd, retinaface, gfpgan")
    args = parser.parse_args(argv)
    if args.salt == PUBLISHED_SALT:
        raise SystemExit(f"{PUBLISHED_SALT} is the published salt: pick another")
    published = Path(args.published or reference_dir())
    pack = Pack(published, args.out, args.salt, args.seed)
    print(f"salt {args.salt}, seed {args.seed}, OpenCV {cv2.__version__}")
    args.out.mkdir(parents=True, exist_ok=True)
    copy_fixed_files(published, args.out)
    parts = set(args.only or ("liveportrait", "audio", "generator", "s3fd", "retinaface", "gfpgan"))
    audio = None
    if "audio" in parts or "generator" in parts:
        audio = wav2lip_audio(pack, args.audio_samples, args.audio_shift)
    if "generator" in parts:
        wav2lip_generator(pack, audio, *args.wav2lip_frame)
    if "s3fd" in parts:
        s3fd(pack, args.s3fd_sizes)
    if "retinaface" in parts:
        retinaface(pack, args.retinaface_sizes)
    if "liveportrait" in parts:
        liveportrait(pack, args.template, args.template_frame)
        liveportrait_driving_options(pack, tuple(args.driving_templates))
    if "gfpgan" in parts:
        gfpgan(pack, args.pipeline_frame)


if __name__ == "__main__":
    main()
