"""The face models the talking head runs: MediaPipe's face detectors and 468-point face
mesh (Apache-2.0), taken from the ``mediapipe`` wheel pinned in ``requirements/models.txt``.

Only the ``.tflite`` files are used (LiteRT runs them), so the wheel is never installed:
``python -m apps.capabilities.media.face_models install`` downloads it through pip from the
configured index, extracts the files, checks each sha256 and writes them into the model
folder (the setting ``MYSPINBOT_FACE_MODEL_DIR``; by default ``share/myspinbot/face`` in
the Python environment, so it travels with the virtualenv or the image). Nothing is
downloaded at run time: a missing or altered file is an error that names this command.
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

INSTALL_COMMAND = "python -m apps.capabilities.media.face_models install"
REQUIREMENTS = Path(__file__).resolve().parents[3] / "requirements" / "models.txt"
LICENCE = "Apache-2.0"


@dataclass(frozen=True)
class ModelFile:
    name: str
    member: str  # path inside the wheel
    sha256: str


FILES: dict[str, ModelFile] = {
    model.name: model
    for model in (
        ModelFile(
            "face_detection_short_range.tflite",
            "mediapipe/modules/face_detection/face_detection_short_range.tflite",
            "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
        ),
        ModelFile(
            "face_detection_full_range_sparse.tflite",
            "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
            "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
        ),
        ModelFile(
            "face_landmark.tflite",
            "mediapipe/modules/face_landmark/face_landmark.tflite",
            "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
        ),
    )
}


class FaceModelMissing(RuntimeError):
    """A face model file is absent (``state`` "missing") or does not match its sha256
    ("corrupt")."""

    def __init__(self, message: str, state: str = "missing") -> None:
        super().__init__(message)
        self.state = state


def default_dir() -> Path:
    return Path(sys.prefix) / "share" / "myspinbot" / "face"


def model_dir() -> Path:
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        configured = getattr(settings, "MYSPINBOT_FACE_MODEL_DIR", None)
    except ImproperlyConfigured:  # outside Django (the installer)
        configured = None
    return Path(configured) if configured else default_dir()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def path(name: str) -> Path:
    """The verified file ``name``; :class:`FaceModelMissing` naming the fix otherwise."""
    model = FILES[name]
    file = model_dir() / name
    if not file.is_file():
        raise FaceModelMissing(f"face model {file} is missing; run `{INSTALL_COMMAND}`")
    marker = file.with_suffix(".sha256")
    # The digest is checked once per file (then remembered beside it), not on every load.
    if not (marker.is_file() and marker.read_text().strip() == model.sha256):
        if _sha256(file) != model.sha256:
            raise FaceModelMissing(
                f"face model {file} does not match its sha256; run `{INSTALL_COMMAND}`",
                "corrupt",
            )
        with contextlib.suppress(OSError):
            marker.write_text(model.sha256)
    return file


def status() -> dict[str, str]:
    """Each file's state: ``present``, ``missing`` or ``corrupt``."""
    states = {}
    for name in FILES:
        try:
            path(name)
            states[name] = "present"
        except FaceModelMissing as error:
            states[name] = error.state
    return states


def install(target: Path | None = None) -> Path:
    """Download the pinned wheel with pip (no dependencies), extract and verify the files."""
    target = target or model_dir()
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--dest",
                scratch,
                "-r",
                str(REQUIREMENTS),
            ],
            check=True,
        )
        wheels = sorted(Path(scratch).glob("mediapipe-*.whl"))
        if not wheels:
            raise FaceModelMissing(f"pip fetched no mediapipe wheel from {REQUIREMENTS}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            for model in FILES.values():
                data = wheel.read(model.member)
                if hashlib.sha256(data).hexdigest() != model.sha256:
                    raise FaceModelMissing(f"{model.member} in {wheels[0].name}: wrong sha256")
                partial = target / (model.name + ".part")
                partial.write_bytes(data)
                partial.replace(target / model.name)
                (target / model.name).with_suffix(".sha256").write_text(model.sha256)
    return target


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        sys.exit(f"usage: {INSTALL_COMMAND}")
    print(f"face models ({LICENCE}) installed in {install()}")
