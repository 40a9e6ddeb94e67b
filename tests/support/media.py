"""Small real media files made in tests."""

from __future__ import annotations

import io
import math
import struct
import wave


def png_bytes(
    width: int = 8, height: int = 8, color: tuple[int, int, int] = (200, 80, 40)
) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(width: int = 16, height: int = 16) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


def wav_bytes(seconds: float = 0.2, rate: int = 16000, frequency: float = 220.0) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        frames = int(seconds * rate)
        out.writeframes(
            b"".join(
                struct.pack("<h", int(12000 * math.sin(2 * math.pi * frequency * i / rate)))
                for i in range(frames)
            )
        )
    return buffer.getvalue()


def flac_silence(seconds: float, rate: int = 8000, *, declared: bool = True) -> bytes:
    """Mono FLAC of digital silence: hours of it are a few MB. Without ``declared`` the
    STREAMINFO total-samples field is zeroed, as if the length were unknown (FLAC allows
    it), so only decoding can tell how long the file is."""
    import tempfile
    from pathlib import Path

    import av
    import numpy as np

    total = round(seconds * rate)
    block = np.zeros((1, 65536), dtype=np.int16)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "silence.flac"
        with av.open(str(path), "w", format="flac") as out:
            stream = out.add_stream("flac", rate=rate, layout="mono")
            done = 0
            while done < total:
                count = min(block.shape[1], total - done)
                frame = av.AudioFrame.from_ndarray(block[:, :count], format="s16", layout="mono")
                frame.rate, frame.pts = rate, done
                for packet in stream.encode(frame):
                    out.mux(packet)
                done += count
            for packet in stream.encode(None):
                out.mux(packet)
        data = bytearray(path.read_bytes())
    if not declared:
        # "fLaC", a 4-byte block header, then STREAMINFO: the 36-bit sample count starts
        # in the low nibble of its byte 13.
        data[8 + 13] &= 0xF0
        data[8 + 14 : 8 + 18] = bytes(4)
    return bytes(data)


def wav_with_codec(codec: str, seconds: float = 0.25, rate: int = 8000) -> bytes:
    """A WAV file of silence whose samples are coded with ``codec`` (e.g. ``adpcm_ms``)."""
    import tempfile
    from pathlib import Path

    import av
    import numpy as np

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "coded.wav"
        with av.open(str(path), "w", format="wav") as out:
            stream = out.add_stream(codec, rate=rate, layout="mono")
            samples = np.zeros((1, round(seconds * rate)), np.int16)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.rate = rate
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                out.mux(packet)
        return path.read_bytes()
