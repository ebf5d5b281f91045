"""Encoding news frames to a YouTube-ready MP4 (H.264 High, yuv420p, AAC), atomically.

Frames are piped to ffmpeg as raw RGB24 while they are rendered, so a video of any length
needs only one frame of memory. The video's length is defined by the frames written:
because it is unknown until the last frame, the speech is added in a second, fast pass
that copies the video stream, pads the audio with silence and cuts it to exactly
n_frames / fps (instead of ``-shortest``, whose interplay with AAC priming can drop the
last frames).

Nothing appears at the output path until the file is complete: ffmpeg writes a hidden
temporary file next to it, which replaces the output only after ffmpeg has succeeded.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import socket
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import IO, NoReturn

import ffmpeg
import imageio_ffmpeg
import numpy as np

from .probe import ProbeError, probe

STDERR_TAIL_CHARS = 3000


def remove_abandoned_temp_files(out_path: Path) -> list[Path]:
    """Delete the temporary files a killed writer of ``out_path`` left behind.

    A process killed with SIGKILL cannot clean up. When its job is redelivered, the new
    attempt calls this first: hidden files of this output whose writer (same host, by pid)
    is no longer running are removed, so a retried job leaves one output and nothing else.
    """
    out_path = Path(out_path)
    pattern = re.compile(
        rf"^\.{re.escape(out_path.name)}\.tmp-(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{{6}}\.[a-z.0-9]+$"
    )
    removed = []
    try:
        siblings = list(out_path.parent.iterdir())
    except OSError:
        return removed
    for path in siblings:
        match = pattern.match(path.name)
        if match is None or match["host"] != socket.gethostname():
            continue
        if _process_alive(int(match["pid"])):
            continue
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputPathError(OSError):
    """The output file cannot be created where it was asked for (checked before encoding)."""


class EncodeError(RuntimeError):
    """ffmpeg failed; the message ends with the tail of its error output."""


class VideoEncoder:
    """Context manager that encodes RGB frames (and optional speech) into an MP4 file.

    >>> with VideoEncoder(Path("out.mp4"), fps=25, audio_path=Path("speech.wav")) as video:
    ...     for frame in frames:
    ...         video.write(frame)
    """

    def __init__(
        self,
        out_path: Path,
        fps: float,
        size: tuple[int, int] = (1920, 1080),
        audio_path: Path | None = None,
        *,
        preset: str = "veryfast",
        crf: int = 20,
        audio_bitrate: str = "192k",
        audio_sample_rate: int | None = 48000,
        audio_channels: int | None = 2,
    ) -> None:
        """`audio_sample_rate` / `audio_channels` of None keep the source's own."""
        self.out_path = Path(out_path)
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = Fraction(fps).limit_denominator(100_000)
        width, height = (int(v) for v in size)
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"size must be positive and even for yuv420p, got {width}x{height}")
        self.size = (width, height)
        self.audio_path = Path(audio_path) if audio_path is not None else None
        if self.audio_path is not None and not self.audio_path.is_file():
            raise FileNotFoundError(errno.ENOENT, f"audio file not found: {self.audio_path}")
        self.preset = preset
        self.crf = crf
        self.audio_bitrate = audio_bitrate
        self.audio_sample_rate = audio_sample_rate
        self.audio_channels = audio_channels

        check_output_directory(self.out_path)
        self._frames = 0
        self._process: subprocess.Popen | None = None
        self._stderr: IO[bytes] | None = None
        self._temp_paths: list[Path] = []
        self._partial: Path | None = None  # the hidden file that becomes out_path
        self._video_only: Path | None = None  # where ffmpeg writes the video stream
        self._finished = False

    # -- context manager ------------------------------------------------------------------

    def __enter__(self) -> VideoEncoder:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- public ---------------------------------------------------------------------------

    @property
    def frames_written(self) -> int:
        return self._frames

    @property
    def duration_s(self) -> float:
        """The length of the video written so far, by definition n_frames / fps."""
        return float(self._frames / self.fps)

    def open(self) -> None:
        """Reserve the temporary files and start ffmpeg, waiting for frames on its stdin."""
        if self._process is not None or self._finished:
            raise RuntimeError("this VideoEncoder has already been opened")
        check_output_directory(self.out_path)
        self._check_audio()
        self._partial = self._reserve_temp("partial.mp4")
        # With audio, the video first goes to its own file; close() muxes in the speech.
        self._video_only = self._partial if self.audio_path is None else self._reserve_temp("video.mp4")
        self._stderr = tempfile.TemporaryFile()  # a file never fills up like a pipe can
        try:
            self._process = subprocess.Popen(
                self._video_command(),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
            )
        except OSError:
            self.abort()
            raise

    def write(self, frame: np.ndarray) -> None:
        """Append one (height, width, 3) uint8 RGB frame."""
        width, height = self.size
        expected = (height, width, 3)
        if not isinstance(frame, np.ndarray) or frame.shape != expected or frame.dtype != np.uint8:
            got = f"{frame.shape} {frame.dtype}" if isinstance(frame, np.ndarray) else type(frame)
            raise ValueError(f"frame must be a uint8 RGB array of shape {expected}, got {got}")
        if self._finished or self._process is None or self._process.stdin is None:
            raise RuntimeError("VideoEncoder is not open; use it as a context manager")
        try:
            self._process.stdin.write(np.ascontiguousarray(frame).data)
        except OSError as error:  # BrokenPipeError: ffmpeg has exited
            self._process.wait()
            self._fail("ffmpeg stopped accepting frames", self._process.returncode, error)
        self._frames += 1

    def close(self) -> Path:
        """Finish encoding, add the audio, and move the file onto `out_path`."""
        if self._finished or self._process is None or self._process.stdin is None:
            raise RuntimeError("VideoEncoder is not open")
        if self._frames == 0:
            self.abort()
            raise EncodeError(f"no frames were written, so {self.out_path} was not created")
        try:
            try:
                self._process.stdin.close()
            except BrokenPipeError:
                pass
            returncode = self._process.wait()
            if returncode != 0:
                self._fail("ffmpeg failed while encoding the video", returncode)
            if self.audio_path is not None:
                self._mux_audio()
            assert self._partial is not None
            os.replace(self._partial, self.out_path)
            self._temp_paths.remove(self._partial)
        except BaseException:
            self.abort()
            raise
        self._cleanup()
        return self.out_path

    def abort(self) -> None:
        """Stop ffmpeg and delete every temporary file; `out_path` is left as it was."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        if process is not None and process.stdin is not None:
            try:
                process.stdin.close()
            except OSError:
                pass
        self._cleanup()

    # -- internals ------------------------------------------------------------------------

    def _reserve_temp(self, suffix: str) -> Path:
        """Create an empty hidden file next to the output, so concurrent runs never collide."""
        name = (f".{self.out_path.name}.tmp-{socket.gethostname()}-{os.getpid()}-"
                f"{secrets.token_hex(3)}.{suffix}")
        path = self.out_path.with_name(name)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except OSError as error:
            self._cleanup()
            raise OutputPathError(
                error.errno, f"cannot write in output directory {path.parent}: {error.strerror}"
            ) from error
        self._temp_paths.append(path)
        return path

    def _check_audio(self) -> None:
        """Fail before encoding minutes of video if the speech cannot be read at all."""
        if self.audio_path is None:
            return
        try:
            has_audio = probe(self.audio_path).has_audio
        except ProbeError as error:
            raise EncodeError(f"cannot read the audio file {self.audio_path}: {error}") from error
        if not has_audio:
            raise EncodeError(f"the audio file {self.audio_path} has no audio stream")

    def _video_command(self) -> list[str]:
        width, height = self.size
        frames = ffmpeg.input(
            "pipe:",
            format="rawvideo",
            pix_fmt="rgb24",
            s=f"{width}x{height}",
            framerate=str(self.fps),
        )
        # Convert RGB to BT.709 limited-range YUV explicitly and say so in the stream, so
        # players (which assume BT.709 for HD) show the colours we rendered.
        video = (
            frames.video.filter("scale", out_color_matrix="bt709", out_range="tv")
            .filter("format", "yuv420p")
            .filter(
                "setparams",
                color_primaries="bt709",
                color_trc="bt709",
                colorspace="bt709",
                range="tv",
            )
        )
        output = ffmpeg.output(
            video,
            str(self._video_only),
            format="mp4",
            vcodec="libx264",
            preset=self.preset,
            crf=self.crf,
            pix_fmt="yuv420p",
            colorspace="bt709",
            color_primaries="bt709",
            color_trc="bt709",
            color_range="tv",
            **{"profile:v": "high"},
            # The index goes up front in the final file only; the mux pass writes that one.
            **({"movflags": "+faststart"} if self._video_only == self._partial else {}),
        )
        return self._compile(output)

    def _mux_command(self) -> list[str]:
        video = ffmpeg.input(str(self._video_only)).video
        speech = ffmpeg.input(str(self.audio_path)).audio.filter("apad")  # silence after the end
        audio_options: dict[str, object] = {"acodec": "aac", "audio_bitrate": self.audio_bitrate}
        if self.audio_sample_rate is not None:
            audio_options["ar"] = self.audio_sample_rate
        if self.audio_channels is not None:
            audio_options["ac"] = self.audio_channels
        output = ffmpeg.output(
            video,
            speech,
            str(self._partial),
            format="mp4",
            vcodec="copy",
            t=f"{float(self._frames / self.fps):.6f}",
            movflags="+faststart",
            **audio_options,
        )
        return self._compile(output, "-nostdin")

    @staticmethod
    def _compile(output: ffmpeg.nodes.OutputStream, *extra: str) -> list[str]:
        output = output.global_args("-hide_banner", "-loglevel", "warning", *extra)
        return ffmpeg.compile(output, cmd=imageio_ffmpeg.get_ffmpeg_exe(), overwrite_output=True)

    def _mux_audio(self) -> None:
        assert self._stderr is not None
        self._stderr.seek(0)
        self._stderr.truncate()
        result = subprocess.run(
            self._mux_command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            check=False,
        )
        if result.returncode != 0:
            what = f"ffmpeg failed while adding the audio from {self.audio_path}"
            self._fail(what, result.returncode)

    def _fail(self, what: str, returncode: int | None, cause: BaseException | None = None) -> NoReturn:
        message = f"{what} for {self.out_path} (ffmpeg exit code {returncode})"
        tail = self._stderr_tail()
        if tail:
            message += ":\n" + tail
        self.abort()
        raise EncodeError(message) from cause

    def _stderr_tail(self) -> str:
        if self._stderr is None or self._stderr.closed:
            return ""
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - STDERR_TAIL_CHARS))
        return self._stderr.read().decode("utf-8", errors="replace").strip()

    def _cleanup(self) -> None:
        for path in self._temp_paths:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        self._temp_paths.clear()
        if self._stderr is not None:
            self._stderr.close()
        self._finished = True


def check_output_directory(out_path: Path) -> None:
    """Raise OutputPathError unless `out_path` can be created in an existing directory."""
    directory = out_path.parent
    if not directory.exists():
        raise OutputPathError(errno.ENOENT, f"output directory does not exist: {directory}")
    if not directory.is_dir():
        raise OutputPathError(errno.ENOTDIR, f"output directory is not a directory: {directory}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputPathError(errno.EACCES, f"output directory is not writable: {directory}")
    if out_path.is_dir():
        raise OutputPathError(errno.EISDIR, f"output path is a directory: {out_path}")
