"""MuseTalk's VAE and UNet (diffusers classes) and one frame end to end, against the pack.

Deterministic weights are written once per session in the official layout (3.4 GB for the
UNet, tests/conftest.py) and loaded strictly through our loaders; the UNet (850 M
parameters) is loaded once for the module.
Everything the pack recorded is read from it: salt, images, landmarks, the VAE's noise,
the waveform (for the end-to-end frame's audio window)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from talkinghead.services.lipsync import musetalk_blend as mb
from talkinghead.services.lipsync import musetalk_face as mf
from tests.musetalk_pack import assert_float, assert_sampled, assert_uint8, requires_extra
from tests.reference_pack import fixture, require

pytestmark = [pytest.mark.reference, requires_extra, pytest.mark.timeout(900)]


def rgb(bgr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(bgr[..., ::-1])


@pytest.fixture(scope="module")
def vae_data():
    return fixture("musetalk/vae.npz")


@pytest.fixture(scope="module")
def unet_data():
    return fixture("musetalk/unet.npz")


@pytest.fixture(scope="module")
def e2e():
    return fixture("musetalk/frame_e2e.npz")


@pytest.fixture(scope="module")
def weights(musetalk_weights):
    """The session's files (tests/conftest.py), written with the pack's salt."""
    return musetalk_weights


@pytest.fixture(scope="module")
def vae(weights):
    from talkinghead.services.lipsync import musetalk_weights as mw

    return mw.load_vae(weights)[0]


@pytest.fixture(scope="module")
def unet(weights):
    from talkinghead.services.lipsync import musetalk_weights as mw

    return mw.load_unet(weights)[0]


# ---- files ---------------------------------------------------------------------------------

@pytest.mark.parametrize("part,keys", [("unet", ("unet",)), ("vae", ("vae",)),
                                       ("whisper", ("whisper",))])
def test_written_files_are_the_manifests(weights, part, keys):
    """Each file holds exactly the tensors (names in the file, shapes) its manifest lists."""
    from safetensors import safe_open

    from talkinghead.services.lipsync import musetalk_weights as mw

    listed = json.loads(require(f"musetalk/{part}.manifest.json").read_text())["file_tensors"]
    path = weights / mw.FILES[keys[0]]
    if path.suffix == ".safetensors":
        with safe_open(str(path), "pt") as f:
            found = {n: list(f.get_slice(n).get_shape()) for n in f.keys()}
    else:
        state = torch.load(path, weights_only=True, mmap=True)
        found = {n: list(t.shape) for n, t in state.items()}
    expected = {n: s for n, s, _ in listed}
    extra = set(found) - set(expected)
    assert extra <= {"proj_out.weight"}  # whisper's tied output projection, as published
    assert {n: found[n] for n in expected} == expected


def test_unet_config_is_the_manifests(weights):
    from talkinghead.services.lipsync import musetalk_weights as mw

    config = json.loads((weights / mw.FILES["unet_config"]).read_text())
    listed = json.loads(require("musetalk/unet.manifest.json").read_text())["config"]
    assert {k: v for k, v in config.items() if not k.startswith("_")} == listed
    vae_config = json.loads((weights / mw.FILES["vae_config"]).read_text())
    vae_listed = json.loads(require("musetalk/vae.manifest.json").read_text())["config"]
    assert {k: v for k, v in vae_config.items() if not k.startswith("_")} == vae_listed


def test_legacy_vae_names_and_pickle_load(weights, vae, tmp_path):
    """A .bin with the old attention names loads strictly (and equals the safetensors one);
    a wrong tensor is named."""
    import shutil

    from safetensors.torch import load_file

    from talkinghead.services.common.errors import WeightsError
    from talkinghead.services.lipsync import musetalk_weights as mw

    legacy = json.loads(require("musetalk/vae.manifest.json").read_text())["legacy_attention_names"]
    state = load_file(str(weights / mw.FILES["vae"]))
    old = {legacy.get(k, k): v for k, v in state.items()}
    root = tmp_path / "w"
    (root / "musetalk/sd-vae").mkdir(parents=True)
    shutil.copy(weights / mw.FILES["vae_config"], root / mw.FILES["vae_config"])
    torch.save(old, root / mw.FILES["vae_bin"])
    loaded, paths = mw.load_vae(root)
    assert paths[-1].name == "diffusion_pytorch_model.bin"
    for (name, a), (_, b) in zip(loaded.state_dict().items(), vae.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    old["decoder.conv_out.bias"] = torch.zeros(5)
    torch.save(old, root / mw.FILES["vae_bin"])
    with pytest.raises(WeightsError, match="decoder.conv_out.bias"):
        mw.load_vae(root)


# ---- VAE -----------------------------------------------------------------------------------

def test_preprocessing(vae_data):
    np.testing.assert_array_equal(rgb(vae_data["image_bgr"]), vae_data["image_rgb"])
    masked, reference = mf.vae_inputs(vae_data["image_rgb"][None])
    assert_sampled(masked.numpy(), vae_data, "pre_masked")
    assert_sampled(reference.numpy(), vae_data, "pre_unmasked")


def assert_posterior(p, data: dict[str, np.ndarray], tag: str) -> None:
    """Mean and std against the pack, both by its float rule; the std through its logarithm.

    The encoder outputs log-variance and the std is exp(logvar / 2), which multiplies
    logvar's float32 rounding by std / 2: on frame_e2e's unmasked crop a std of 8.3 lands
    1.3e-4 from the pack's (over the rule's 1e-4), computed here in float32 and in float64
    alike, so it is the pack's own rounding, while its logvar is within 3e-5. So the std is
    checked as 2·log(std), the quantity the network computes."""
    assert_float(p.mean.numpy(), data[f"posterior_mean_{tag}"], f"mean {tag}")
    ours = 2 * np.log(p.std.double().numpy())
    assert_float(ours, 2 * np.log(data[f"posterior_std_{tag}"].astype(np.float64)),
                 f"std {tag} (as logvar)")


def test_posteriors_and_latents(vae, vae_data):
    masked, reference = mf.vae_inputs(vae_data["image_rgb"][None])
    with torch.no_grad():
        for x, tag in ((masked, "masked"), (reference, "unmasked")):
            p = mf.encode(vae, x)
            assert_posterior(p, vae_data, tag)
            assert_float(p.std.numpy(), vae_data[f"posterior_std_{tag}"], f"std {tag}")
            assert_float(torch.log(p.std ** 2).numpy(), vae_data[f"posterior_logvar_{tag}"],
                         f"logvar {tag}")
        latents = mf.latents(vae, masked, reference,
                             torch.from_numpy(vae_data["noise_masked"]),
                             torch.from_numpy(vae_data["noise_unmasked"]),
                             float(vae_data["scaling_factor"]))
    assert_float(latents.numpy(), vae_data["latents"], "latents")


def test_decode(vae, vae_data):
    from talkinghead.services.lipsync.networks.musetalk import VAE_SCALING

    assert VAE_SCALING == float(vae_data["scaling_factor"]) == vae.config.scaling_factor
    with torch.no_grad():
        decoded = mf.decode_float(vae, torch.from_numpy(vae_data["decode_input"]), VAE_SCALING)
    assert_sampled(decoded.numpy(), vae_data, "decoder_output_float")
    assert_uint8(rgb(mf.to_uint8_rgb(decoded)), vae_data["decoded_bgr_uint8"], "decoded")


def test_crop_noise_is_deterministic(vae_data):
    a, b = mf.crop_noise(vae_data["image_rgb"]), mf.crop_noise(vae_data["image_rgb"].copy())
    assert torch.equal(a, b) and a.shape == (2, 4, 32, 32)
    other = vae_data["image_rgb"].copy()
    other[0, 0, 0] ^= 1
    assert not torch.equal(a, mf.crop_noise(other))
    assert abs(float(a.mean())) < 0.1 and abs(float(a.std()) - 1) < 0.1


# ---- UNet ----------------------------------------------------------------------------------

def test_unet(unet, unet_data):
    from talkinghead.services.lipsync.musetalk_audio import positional_table

    audio = torch.from_numpy(unet_data["audio_window_raw"]) + positional_table()
    with torch.no_grad():
        out = unet(torch.from_numpy(unet_data["latents_in"]),
                   torch.tensor([int(unet_data["timestep"])]), encoder_hidden_states=audio).sample
    assert_float(out.numpy(), unet_data["output"], "unet output")


# ---- one frame, end to end -----------------------------------------------------------------

def test_frame_end_to_end(vae, unet, e2e, weights):
    """Landmarks → box → crop → latents (stored noise) → UNet (the window of our whisper
    states) → decode → resize → blend through the jaw mask of the pack's synthetic labels."""
    from talkinghead.services.lipsync import musetalk_audio as ma
    from talkinghead.services.lipsync import musetalk_weights as mw
    from talkinghead.services.lipsync.networks.musetalk import VAE_SCALING

    frame = rgb(e2e["frame_bgr"])
    box = mf.box_from_landmarks68(e2e["landmarks68_injected"])
    assert box == tuple(int(v) for v in e2e["bbox_x1y1x2y2"])
    box = mf.add_margin(box, frame.shape[0], int(e2e["extra_margin"]))
    assert box == tuple(int(v) for v in e2e["bbox_with_margin_x1y1x2y2"])
    crop = mf.crop_face(frame, box)
    assert_uint8(rgb(crop), e2e["crop256_bgr"], "crop256", levels=0)

    audio = fixture("musetalk/audio.npz")
    encoder, extractor, _ = mw.load_whisper(weights)
    states = ma.encoder_states(encoder, ma.input_features(extractor, audio["wav_float32_loaded"]))
    windows = ma.AudioWindows.build(states, len(audio["wav_float32_loaded"]), 25.0)
    window = windows.window([int(e2e["audio_window_frame_index_fps25"])])
    assert_float(window.numpy(), e2e["audio_window_raw"], "audio window")
    tokens = window + ma.positional_table()
    assert_float(tokens.numpy(), e2e["audio_after_pe"], "audio after pe")

    with torch.no_grad():
        masked, reference = mf.vae_inputs(crop[None])
        for x, tag in ((masked, "masked"), (reference, "unmasked")):
            assert_posterior(mf.encode(vae, x), e2e, tag)
        latents = mf.latents(vae, masked, reference, torch.from_numpy(e2e["noise_masked"]),
                             torch.from_numpy(e2e["noise_unmasked"]), VAE_SCALING)
        assert_float(latents.numpy(), e2e["latents"], "latents")
        out = unet(latents, torch.tensor([0]), encoder_hidden_states=tokens).sample
        assert_float(out.numpy(), e2e["unet_output"], "unet output")
        decoded = mf.decode_float(vae, out, VAE_SCALING)
    assert_sampled(decoded.numpy(), e2e, "decoder_output_float")
    face = mf.to_uint8_rgb(decoded)[0]
    assert_uint8(rgb(face), e2e["decoded_face_bgr"], "decoded face")
    # from here on the pack's own decoded face, so that a one-level decoder difference is not
    # amplified by the resize: the resize and blend are then exact
    face = rgb(e2e["decoded_face_bgr"])
    resized = mf.resize_to_box(face, box)
    assert_uint8(rgb(resized), e2e["face_resized_to_box_bgr"], "resized", levels=0)
    labels = fixture("musetalk/parsing.npz")["synthetic_labels_512"]
    cbox = mb.crop_box(box)
    material = mb.BlendMaterial(box, cbox, mb.prepare_mask(mb.labels_to_mask(labels), box, cbox))
    assert_uint8(rgb(mb.blend(frame, resized, material)), e2e["blended_frame_bgr"], "blended",
                 levels=0)
