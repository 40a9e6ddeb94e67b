"""Hostile media against the probe and the decoders the workers run
(``apps/capabilities/media/probe.py``, ``audio.decode_audio``, ``video.read_audio``)."""

from __future__ import annotations

import io
import time
import tracemalloc
from pathlib import Path
from typing import Any

import av
import pytest
from PIL import Image, UnidentifiedImageError

from apps.capabilities.media import audio, probe, video
from myspinbot.errors import PermanentError
from tests.support.listener import Listener, listening
from tests.support.media import flac_silence, wav_bytes, wav_with_codec

listener = pytest.fixture(listening, name="listener")

ID3 = b"ID3\x04\x00\x00\x00\x00\x00\x00"  # an empty ID3v2 tag: filetype calls it audio/mpeg


def hls_playlist(port: int) -> bytes:
    return (
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n"
        f"#EXTINF:1.0,\nhttp://127.0.0.1:{port}/segment.ts\n#EXT-X-ENDLIST\n"
    ).encode()


def sdp_description(port: int) -> bytes:
    return (
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=voice\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\n"
    ).encode()


def test_an_hls_playlist_is_refused_and_fetches_nothing(tmp_path: Path, listener: Listener) -> None:
    playlist = hls_playlist(listener.port)
    # Given a playlist that plain FFmpeg follows: opened as a file object named by the
    # client, it fetches its segment from the listener.
    bait = io.BytesIO(playlist)
    bait.name = "voice.m3u8"
    with pytest.raises(av.FFmpegError):
        av.open(bait, timeout=2).close()
    assert listener.connections == 1
    path = tmp_path / "voice.m3u8"
    path.write_bytes(playlist)

    started = time.monotonic()
    codes = []
    for attempt in (
        lambda: probe.probe_audio(path),
        lambda: probe.probe_audio(path, "audio/mpeg"),
        lambda: audio.decode_audio(path, 16000),
        lambda: video.read_audio(path),
    ):
        with pytest.raises(PermanentError) as raised:
            attempt()
        codes.append(raised.value.code)

    assert codes == ["bad_audio"] * 4
    assert time.monotonic() - started < 5
    assert listener.connections == 1


def test_an_sdp_description_behind_an_id3_tag_is_refused(
    tmp_path: Path, listener: Listener
) -> None:
    path = tmp_path / "voice.mp3"
    path.write_bytes(ID3 + sdp_description(listener.port))

    started = time.monotonic()
    with pytest.raises(PermanentError) as forced:
        probe.probe_audio(path, "audio/mpeg")
    with pytest.raises(PermanentError) as sniffed:
        probe.probe_audio(path)

    # Forced to mp3 it is an MP3 with no audio; left to probing, FFmpeg's answer
    # (sdp) is not on the list.
    assert (forced.value.code, sniffed.value.code) == ("bad_audio", "bad_audio")
    assert "sdp" not in probe.FORMAT_WHITELIST.split(",")
    assert time.monotonic() - started < 5
    assert listener.connections == 0


def test_a_codec_not_on_the_list_is_refused_inside_an_allowed_container(tmp_path: Path) -> None:
    path = tmp_path / "adpcm.wav"
    path.write_bytes(wav_with_codec("adpcm_ms"))

    with pytest.raises(PermanentError) as raised:
        probe.probe_audio(path, "audio/x-wav")

    assert raised.value.code == "unsupported_audio"
    assert raised.value.message == "adpcm_ms audio in a wav container is not accepted"


def test_a_declared_three_hour_flac_is_refused_from_its_header(tmp_path: Path) -> None:
    path = tmp_path / "silence.flac"
    path.write_bytes(flac_silence(3 * 3600))

    started = time.monotonic()
    with pytest.raises(PermanentError) as raised:
        probe.probe_audio(path, "audio/x-flac")

    # 3 h of 8 kHz FLAC decodes in seconds; the header alone answers in far less.
    assert time.monotonic() - started < 0.5
    assert raised.value.code == "audio_too_long"
    assert raised.value.details == {
        "duration_seconds": 10800.0,
        "max_seconds": 600.0,
        "max_samples": 57_600_000,
    }


def test_decoding_an_undeclared_long_flac_stops_at_the_bound(tmp_path: Path, settings: Any) -> None:
    settings.MYSPINBOT_MAX_AUDIO_SECONDS = 60.0
    path = tmp_path / "silence.flac"
    path.write_bytes(flac_silence(3 * 3600, declared=False))
    with probe.open_audio(path) as opened:
        assert opened.info.duration is None

    tracemalloc.start()
    try:
        with pytest.raises(PermanentError) as raised:
            audio.decode_audio(path, 8000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert raised.value.code == "audio_too_long"
    # 60 s of float32 at 8 kHz is 1.9 MB; all 3 hours would be 346 MB.
    assert peak < 8 * 1024 * 1024


def test_the_video_decoder_stops_at_the_bound_too(tmp_path: Path, settings: Any) -> None:
    settings.MYSPINBOT_MAX_AUDIO_SECONDS = 60.0
    path = tmp_path / "silence.flac"
    path.write_bytes(flac_silence(600, declared=False))

    with pytest.raises(PermanentError) as raised:
        video.read_audio(path)

    assert raised.value.code == "audio_too_long"


def test_decoding_has_a_wall_clock_limit(tmp_path: Path, settings: Any) -> None:
    settings.MYSPINBOT_MEDIA_DECODE_SECONDS = 0.1
    path = tmp_path / "silence.flac"
    path.write_bytes(flac_silence(590, declared=False))

    started = time.monotonic()
    with pytest.raises(PermanentError) as raised:
        audio.decode_audio(path, 8000)

    assert raised.value.code == "media_timeout"
    assert time.monotonic() - started < 1.0


def test_ordinary_audio_is_described(tmp_path: Path) -> None:
    path = tmp_path / "voice.wav"
    path.write_bytes(wav_bytes(0.5, rate=16000))

    info = probe.probe_audio(path, "audio/x-wav")

    assert info == probe.AudioInfo("wav", "pcm_s16le", 16000, 1, 0.5)


def test_images_open_only_with_the_allowed_plugins(tmp_path: Path) -> None:
    gif = tmp_path / "x.gif"
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    png = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(png, format="PNG")

    with pytest.raises(UnidentifiedImageError):
        probe.open_image(gif)
    with probe.open_image(png) as image:
        assert image.format == "PNG"
    assert Image.MAX_IMAGE_PIXELS == 40_000_000
