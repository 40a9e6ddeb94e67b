"""The frame strip in docs/: the sample portrait (scikit-image's astronaut) speaking a
sentence through the CPU talking head and video.compose, eight frames of the finished
16:9 MP4 side by side, cut around the face.

    .venv/bin/python bench/frame_strip.py [--out docs/talking-head-strip.jpg]

The frames are taken at fixed times, so a change to the talking head shows as a change
to the picture.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(REPO))

SENTENCE = "Hello! Maybe the big blue balloon will float over the moon tonight."
TIMES = (0.2, 0.9, 1.2, 1.5, 1.8, 2.1, 2.6, 3.0)  # seconds into the video


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "talking-head-strip.jpg")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "myspinbot.settings.test")
    import django

    django.setup()
    import av
    import numpy as np
    from PIL import Image
    from skimage import data

    from apps.capabilities.media import talking_head, video
    from apps.capabilities.media.tts_engines import PiperEngine, Voice, write_wav

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        portrait = work / "portrait.png"
        Image.fromarray(data.astronaut()).save(portrait)
        samples, rate = PiperEngine().synthesize(SENTENCE, Voice())
        pad = np.zeros(round(rate * 0.4), samples.dtype)
        narration = work / "narration.wav"
        write_wav(narration, np.concatenate([pad, samples, pad]), rate)
        clip = talking_head.render(
            portrait, narration, SENTENCE, work / "clip.mp4", lambda f, m: None
        )
        settings = video.VideoSettings(width=1280, height=720, fps=25, captions=False)
        final = work / "video.mp4"
        video.compose_talking(
            work / "clip.mp4",
            clip.face,
            video.read_audio(narration),
            [],
            settings,
            final,
            lambda f, m: None,
        )
        wanted = {round(t * settings.fps) for t in TIMES}
        with av.open(str(final)) as container:
            frames = [
                frame.to_ndarray(format="rgb24")
                for index, frame in enumerate(container.decode(video=0))
                if index in wanted
            ]
    # Around the face found in the first frame: twice its width, from above the hair to
    # below the chin.
    from apps.capabilities.media.face import find_face

    left, top, right, bottom = find_face(frames[0]).box
    centre, width = (left + right) / 2, right - left
    x0, x1 = max(0, int(centre - width)), min(frames[0].shape[1], int(centre + width))
    y0 = max(0, int(top - 0.6 * width))
    y1 = min(frames[0].shape[0], int(bottom + 0.4 * width))
    cut = [frame[y0:y1, x0:x1] for frame in frames]
    strip = Image.fromarray(np.concatenate(cut, axis=1))
    if strip.width > 1600:
        strip = strip.resize(
            (1600, round(strip.height * 1600 / strip.width)), Image.Resampling.LANCZOS
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    strip.save(args.out, quality=88)
    print(f"{args.out}: {len(cut)} frames at {', '.join(f'{t:g}' for t in TIMES)} s")
    print("rerun: .venv/bin/python bench/frame_strip.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
