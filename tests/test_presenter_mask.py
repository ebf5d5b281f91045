"""The presenter paste-back mask (services/restore/paste_masks.py): the face parser's mask is
made once per (motion-clip frame, replica) and reused across the presenter's videos; the
exact mode (--paste-mask parse) parses every frame; the cache keeps to its byte budget and
is shared safely by concurrent streams. GFPGAN on deterministic weights, as
tests/test_gfpgan_engine.py."""

from __future__ import annotations

import threading
import urllib.request
from dataclasses import replace

import numpy as np
import pytest
from prometheus_client import REGISTRY

from talkinghead.local_stack import LocalStack
from talkinghead.orchestrator.schedule import pingpong_schedule
from talkinghead.orchestrator.stage_clients import RestoreClient, open_channel, wait_for_serving
from talkinghead.services.common.frames import FaceGeometry, VideoFrame
from talkinghead.services.restore import face_align as fa
from talkinghead.services.restore import gfpgan_weights as gw
from talkinghead.services.restore import paste_masks as pm
from talkinghead.services.restore.gfpgan_engine import GFPGANEngine
from tests.reference_pack import fixture, salt_of

CLIP_KEY = "0123456789abcdef0123456789abcdef"
MOTION_FRAMES = 3


@pytest.fixture(scope="module")
def pipe():
    return fixture("gfpgan/gfpgan_pipeline.npz")


@pytest.fixture(scope="module")
def weights(tmp_path_factory, pipe):
    root = tmp_path_factory.mktemp("gfpgan-weights")
    gw.write_deterministic_checkpoints(root, salt_of(pipe))
    return root


def motion_clip(pipe) -> list[VideoFrame]:
    """A presenter's clip: the pack's frame, the head moved a few pixels per clip frame."""
    rgb = np.ascontiguousarray(pipe["frame_bgr_u8"][..., ::-1])
    clip = []
    for k in range(MOTION_FRAMES):
        shift = np.float32(3 * k)
        image = np.roll(rgb, 3 * k, axis=1)
        lm = pipe["landmarks_5"].astype(np.float32) + np.array([shift, 0], np.float32)
        box = (*lm.min(axis=0), *lm.max(axis=0))
        clip.append(VideoFrame(k, image, FaceGeometry(
            box=tuple(float(v) for v in box), landmarks=lm, clip_key=CLIP_KEY, clip_frame=k)))
    return clip


def video(clip: list[VideoFrame], n_out: int, seed: int) -> list[VideoFrame]:
    """One video of the presenter: the ping-pong loop of the clip, each output frame with its
    own mouth (noise drawn over the mouth corners' region), as lipsync leaves it."""
    rng = np.random.default_rng(seed)
    frames = []
    for i, k in enumerate(pingpong_schedule(len(clip), n_out)):
        source = clip[k]
        image = source.image.copy()
        lm = np.asarray(source.face.landmarks)
        x0, x1 = int(lm[3, 0]) - 4, int(lm[4, 0]) + 4
        y0, y1 = int(lm[3:, 1].min()) - 6, int(lm[3:, 1].max()) + 10
        image[y0:y1, x0:x1] = rng.integers(0, 256, (y1 - y0, x1 - x0, 3), dtype=np.uint8)
        frames.append(VideoFrame(i, image, source.face))
    return frames


def parse_count(mode: str) -> float:
    return REGISTRY.get_sample_value("talkinghead_restore_parse_masks_total",
                                     {"mode": mode}) or 0.0


def scraped(port: int, name: str, labels: str = "") -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} "):
            return float(line.split()[-1])
    return 0.0


def test_served_replica_parses_once_per_motion_frame_across_two_videos(weights, pipe, tmp_path):
    """Two videos of one presenter (same clip key and frame indices, other mouths) through a
    served replica in the default mode: the parser runs once per distinct motion frame, as
    its /metrics counter says, and the frames come back in order with their geometry."""
    clip = motion_clip(pipe)
    first, second = video(clip, 4, seed=1), video(clip, 3, seed=2)
    stack = LocalStack(tmp_path, engine="gfpgan", with_metrics=True)
    port = stack.start_server("restore", 0, "restore-gfpgan", "--weights", str(weights),
                              "--batch-size", "2").port
    target = f"127.0.0.1:{port}"
    try:
        channel = open_channel(target)
        wait_for_serving(channel, "restore", target, 180)
        channel.close()
        metrics = stack.metrics_ports["restore-gfpgan"]
        client = RestoreClient(target, "video-1")
        out1 = client.restore(first, weight=1.0, timeout=300)
        client.close()
        after_first = scraped(metrics, "talkinghead_restore_parse_masks_total",
                              '{mode="presenter"}')
        client = RestoreClient(target, "video-2")
        out2 = client.restore(second, weight=1.0, timeout=300)
        client.close()
        after_second = scraped(metrics, "talkinghead_restore_parse_masks_total",
                               '{mode="presenter"}')
        reuses = scraped(metrics, "talkinghead_restore_paste_mask_reuses_total")
    finally:
        stack.stop()
    assert after_first == MOTION_FRAMES  # 4 output frames from 3 motion frames
    assert after_second == MOTION_FRAMES  # the second video parsed nothing
    assert reuses == len(first) + len(second) - MOTION_FRAMES
    assert [f.index for f in out1] == list(range(4)) and [f.index for f in out2] == [0, 1, 2]
    assert all(o.face.clip_key == CLIP_KEY and o.face.clip_frame == s.face.clip_frame
               for o, s in zip(out1 + out2, first + second, strict=True))


@pytest.fixture(scope="module")
def exact(weights):
    return GFPGANEngine(weights, "cpu", batch_size=2, paste_mask="parse")


def test_exact_mode_parses_every_frame_and_presenter_mode_stays_close(weights, pipe, exact):
    """--paste-mask parse parses each output frame; the presenter mode gives the exact
    frames for the output frames it parsed, and for the others differs only inside the
    face's square (on these deterministic weights the parser's classes are not a face's,
    so how much it differs there is the bench's figure, not a bound checked here)."""
    clip = motion_clip(pipe)
    frames = video(clip, 4, seed=1)  # motion frames 0, 1, 2, 1
    before = parse_count("parse")
    want = exact.restore(frames, weight=1.0)
    assert parse_count("parse") - before == len(frames)
    presenter = GFPGANEngine(weights, "cpu", batch_size=2)  # auto: presenter, parser present
    assert presenter.paste_mask == "presenter"
    before = parse_count("presenter")
    got = presenter.restore(frames, weight=1.0)
    assert parse_count("presenter") - before == MOTION_FRAMES
    first_of = {}
    for i, k in enumerate(pingpong_schedule(MOTION_FRAMES, len(frames))):
        first_of.setdefault(k, i)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        diff = np.abs(g.image.astype(int) - w.image.astype(int))
        if i in first_of.values():
            assert diff.max() == 0, i  # the very mask the exact mode makes
            continue
        inverse = fa.inverse_matrix(fa.alignment_matrix(
            np.asarray(frames[i].face.landmarks, np.float64)))
        y0, y1, x0, x1 = fa.face_region(inverse, fa.FACE_SIZE, g.height, g.width)
        diff[y0:y1, x0:x1] = 0
        assert diff.max() == 0, i


def test_device_path_keeps_presenter_masks_on_the_device(weights, pipe):
    """The device path (cuda/mps's default; forced here on the CPU) in presenter mode: the
    parser and blur run once per motion frame across two videos, the cache holds the masks
    as device tensors in face coordinates, and the frames are the host path's within the
    device blur's bound (tests/test_device_paste.py)."""
    import torch

    from tests.test_device_paste import BLURRED_MASK_COUNTS, BLURRED_MASK_SHARE

    clip = motion_clip(pipe)
    first, second = video(clip, 3, seed=1), video(clip, 2, seed=2)
    on_device = GFPGANEngine(weights, "cpu", batch_size=2, device_paste=True)
    on_host = GFPGANEngine(weights, "cpu", batch_size=2)
    assert on_device.paste_mask == "presenter" and on_device.device_paste
    before = parse_count("presenter")
    got = on_device.restore(first, weight=1.0) + on_device.restore(second, weight=1.0)
    assert parse_count("presenter") - before == MOTION_FRAMES
    cache = on_device.mask_cache
    assert cache.made == MOTION_FRAMES and len(cache) == MOTION_FRAMES
    assert cache.hits == len(first) + len(second) - MOTION_FRAMES
    entry = cache.get(pm.mask_key(first[0], np.asarray(first[0].face.landmarks, np.float64)))
    assert entry.region is None and isinstance(entry.mask, torch.Tensor)
    assert tuple(entry.mask.shape) == (fa.FACE_SIZE, fa.FACE_SIZE)
    want = on_host.restore(first, weight=1.0) + on_host.restore(second, weight=1.0)
    for g, w in zip(got, want, strict=True):
        off = np.abs(g.image.astype(int) - w.image.astype(int))
        assert off.max() <= BLURRED_MASK_COUNTS and (off > 0).mean() <= BLURRED_MASK_SHARE


def test_frames_without_a_clip_key_are_parsed_each_time(weights, pipe):
    """No motion-frame identity: nothing to share, each frame parsed as the exact mode."""
    engine = GFPGANEngine(weights, "cpu", batch_size=2, paste_mask="presenter")
    frames = [replace(f, face=replace(f.face, clip_key=""))
              for f in video(motion_clip(pipe), 2, seed=3)]
    before = parse_count("presenter")
    engine.restore(frames, weight=1.0)
    assert parse_count("presenter") - before == 2 and len(engine.mask_cache) == 0


def test_cache_keeps_to_its_byte_budget():
    """Least recently used masks go first; the bytes held never exceed the budget; a mask
    larger than the budget is used but not kept."""
    one = pm.PasteMask((0, 10, 0, 10), np.zeros((10, 10)))  # 800 bytes
    cache = pm.PasteMaskCache(max_bytes=2000)
    for k in range(3):
        assert cache.claim(("clip", k)) == (None, None)
        cache.put(("clip", k), one)
        assert cache.bytes <= 2000
    assert len(cache) == 2 and cache.evicted == 1 and cache.bytes == 1600
    assert cache.get(("clip", 0)) is None and cache.get(("clip", 2)) is one
    big = pm.PasteMask((0, 30, 0, 30), np.zeros((30, 30)))
    cache.claim(("clip", 9))
    cache.put(("clip", 9), big)
    assert cache.get(("clip", 9)) is None and cache.bytes == 1600


def test_engine_cache_bound_holds_with_real_masks(weights, pipe):
    """With room for two masks, three motion frames: the engine's cache holds two."""
    engine = GFPGANEngine(weights, "cpu", batch_size=2)
    frames = video(motion_clip(pipe), 3, seed=4)
    engine.restore(frames[:1], weight=1.0)
    size = engine.mask_cache.bytes
    engine.mask_cache.max_bytes = 2 * size
    engine.restore(frames[1:], weight=1.0)
    assert len(engine.mask_cache) == 2 and engine.mask_cache.bytes <= 2 * size


def test_concurrent_streams_make_each_mask_once(weights, pipe):
    """Two streams of the same presenter video at once on one engine: each motion
    frame's mask is made once (the others wait for it or find it made), and every stream
    gets the same frames."""
    engine = GFPGANEngine(weights, "cpu", batch_size=2)
    clip = motion_clip(pipe)
    videos = [video(clip, 3, seed=10) for _ in range(2)]
    before = parse_count("presenter")
    results: list = [None] * len(videos)
    errors: list = []
    barrier = threading.Barrier(len(videos))

    def stream(s: int) -> None:
        try:
            barrier.wait()
            results[s] = [f for n in range(0, 3, 2)
                          for f in engine.restore(videos[s][n:n + 2], weight=1.0)]
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=stream, args=(s,)) for s in range(len(videos))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors, errors
    assert parse_count("presenter") - before == MOTION_FRAMES
    assert len(engine.mask_cache) == MOTION_FRAMES
    for got in results[1:]:
        assert [f.index for f in got] == [0, 1, 2]
        assert all(np.array_equal(g.image, w.image) for g, w in zip(got, results[0],
                                                                    strict=True))


# ---- the motion frame's identity travels with the geometry --------------------------------


def test_the_pipeline_stamps_the_clip_key_and_the_wire_keeps_it():
    """motion_clip's frames carry (clip key, index in the clip); the wire keeps both; a
    lipsync that derives landmarks from the box keeps them too."""
    from talkinghead.orchestrator.pipeline import with_clip_identity
    from talkinghead.services.common.wire import frame_from_proto, frame_to_proto
    from talkinghead.services.lipsync.lite_engine import _face_for

    image = np.zeros((64, 64, 3), np.uint8)
    clip = [VideoFrame(i, image, FaceGeometry(box=(10.0, 10.0, 50.0, 50.0))) for i in range(3)]
    clip.append(VideoFrame(3, image))
    stamped = with_clip_identity(clip, CLIP_KEY)
    assert [(f.face.clip_key, f.face.clip_frame) for f in stamped[:3]] == [
        (CLIP_KEY, 0), (CLIP_KEY, 1), (CLIP_KEY, 2)]
    assert stamped[3].face is None and clip[0].face.clip_key == ""  # the input is not changed
    back = frame_from_proto(frame_to_proto(replace(stamped[2], index=40)))
    assert (back.face.clip_key, back.face.clip_frame, back.index) == (CLIP_KEY, 2, 40)
    synced = _face_for(stamped[1])  # no landmarks: made from the box, identity kept
    assert np.any(synced.landmarks) and (synced.clip_key, synced.clip_frame) == (CLIP_KEY, 1)
