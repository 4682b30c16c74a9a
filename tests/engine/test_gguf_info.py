import os
from pathlib import Path

import numpy as np
import pytest

from desklm.engine.models.gguf_info import read_gguf
from desklm.errors import DeskLMError


def test_embedded_model_metadata(model_path):
    info = read_gguf(model_path)
    assert info.architecture == "gemma3"
    assert info.context_length == 32768
    assert info.block_count == 18
    assert info.chat_template is None  # a base model: DeskLM must choose the format itself
    assert info.tensor_data_end == info.file_size == model_path.stat().st_size
    assert info.arrays["tokenizer.ggml.tokens"] == 262144


def write_gguf(path: Path, arch: str = "llama", tensor: bool = True) -> Path:
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(256)
    w.add_block_count(1)
    if tensor:
        w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def reason(path) -> str:
    with pytest.raises(DeskLMError) as e:
        read_gguf(path)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_bad_paths_get_specific_reasons(tmp_path, model_path):
    assert "no such file" in reason(tmp_path / "missing.gguf")
    assert "is a directory" in reason(tmp_path)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    assert "file is empty" in reason(empty)
    text = tmp_path / "notes.gguf"
    text.write_text("hello, this is not a model\n")
    assert "not a GGUF model file (a text file)" in reason(text)
    rnd = tmp_path / "random.gguf"
    rnd.write_bytes(os.urandom(4096))
    assert "not a GGUF model file" in reason(rnd)
    loop = tmp_path / "loop.gguf"
    os.symlink(loop, loop)
    assert "symbolic link loop" in reason(loop)


@pytest.mark.parametrize(
    ("keep", "where"),
    [
        (12, "header"),
        (5000, "metadata"),
        (100_000_000, "tensor data"),
    ],
)
def test_truncated_copies_of_the_real_model(tmp_path, model_path, keep, where):
    cut = tmp_path / "cut.gguf"
    with open(model_path, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(keep))
    assert f"truncated in the {where}" in reason(cut)


def test_corrupted_metadata_type(tmp_path, model_path):
    bad = tmp_path / "bad.gguf"
    data = bytearray(model_path.read_bytes()[:2_000_000])
    # the first key's value type sits right after: magic, version, counts, key length + key
    key_len = int.from_bytes(data[24:32], "little")
    data[32 + key_len : 36 + key_len] = (77).to_bytes(4, "little")
    bad.write_bytes(bytes(data))
    assert "unknown value type 77" in reason(bad)


def test_unknown_architecture_and_a_valid_small_file(tmp_path):
    ok = read_gguf(write_gguf(tmp_path / "ok.gguf"))
    assert ok.architecture == "llama" and ok.tensor_count == 1
    assert "architecture 'nosucharch' is not supported" in reason(
        write_gguf(tmp_path / "x.gguf", "nosucharch")
    )
