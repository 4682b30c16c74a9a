"""Bad files, built from the real embedded model where a realistic file matters."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

PAYLOAD_MARKER = "desklm-template-pwned"


def patch_u32(src: Path, dst: Path, key: str, value: int) -> Path:
    """Copy ``src`` with one u32 metadata value changed (same size: nothing moves)."""
    head = bytearray(src.read_bytes()[: 8 << 20])
    k = key.encode()
    i = head.find(struct.pack("<Q", len(k)) + k)
    assert i > 0, key
    j = i + 8 + len(k)
    assert struct.unpack_from("<I", head, j)[0] == 4  # a u32 value
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as f:
        f.seek(j + 4)
        f.write(struct.pack("<I", value))
    return dst


def truncated(src: Path, dst: Path, keep: int) -> Path:
    with open(src, "rb") as a, open(dst, "wb") as b:
        b.write(a.read(keep))
    return dst


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory, model_path) -> dict[str, Path]:
    """Every kind of bad model file, each with the words its reason must contain."""
    d = tmp_path_factory.mktemp("bad")
    files: dict[str, Path] = {}
    files["missing"] = d / "missing.gguf"
    files["directory"] = d / "a-folder.gguf"
    files["directory"].mkdir()
    (d / "empty.gguf").write_bytes(b"")
    files["empty"] = d / "empty.gguf"
    (d / "notes.gguf").write_text("just some notes, not a model\n")
    files["text"] = d / "notes.gguf"
    (d / "random.gguf").write_bytes(os.urandom(1 << 16))
    files["random"] = d / "random.gguf"
    files["truncated header"] = truncated(model_path, d / "th.gguf", 20)
    files["truncated metadata"] = truncated(model_path, d / "tm.gguf", 100_000)
    files["truncated tensor data"] = truncated(model_path, d / "tt.gguf", 200_000_000)
    data = bytearray(model_path.read_bytes()[:2_000_000])
    key_len = int.from_bytes(data[24:32], "little")
    data[32 + key_len : 36 + key_len] = (99).to_bytes(4, "little")
    (d / "corrupt.gguf").write_bytes(bytes(data))
    files["corrupted metadata"] = d / "corrupt.gguf"
    arch = bytearray(model_path.read_bytes()[: 8 << 20])
    i = arch.find(b"gemma3", 40)
    arch[i : i + 6] = b"zzzzz3"  # general.architecture -> an unknown one, same length
    with open(d / "arch.gguf", "wb") as f:
        f.write(arch)
        with open(model_path, "rb") as src:
            src.seek(len(arch))
            shutil.copyfileobj(src, f)
    files["unknown architecture"] = d / "arch.gguf"
    loop = d / "loop.gguf"
    os.symlink(loop, loop)
    files["symlink loop"] = loop
    files["llama.cpp abort"] = patch_u32(model_path, d / "abort.gguf", "gemma3.block_count", 0)
    files["llama.cpp refusal"] = patch_u32(
        model_path, d / "refused.gguf", "gemma3.attention.head_count_kv", 3
    )
    return files


REASONS = {
    "missing": "no such file",
    "directory": "is a directory",
    "empty": "file is empty",
    "text": "not a GGUF model file (a text file)",
    "random": "not a GGUF model file",
    "truncated header": "truncated in the header",
    "truncated metadata": "truncated in the metadata",
    "truncated tensor data": "truncated in the tensor data",
    "corrupted metadata": "unknown value type 99",
    "unknown architecture": "architecture 'zzzzz3' is not supported",
    "symlink loop": "symbolic link loop",
    "llama.cpp abort": "llama.cpp crashed reading this file (SIGABRT)",
    # header checks pass; llama.cpp's own reason is shown, not "Failed to load model"
    "llama.cpp refusal": "tensor 'blk.0.attn_k.weight' has wrong shape",
}


def add_chat_template(src: Path, dst: Path, template: str) -> Path:
    """Copy ``src`` with ``tokenizer.chat_template`` added as its first metadata key, by bytes
    (``gguf_new_metadata`` parses the 262k-token vocabulary in Python: 24 s). The value is
    padded with spaces so the inserted bytes are a multiple of the file's alignment: the
    tensor data moves by whole alignment units and every tensor offset stays valid."""
    import gguf

    from desklm.engine.models.gguf_info import read_gguf

    info = read_gguf(src)
    assert info.chat_template is None, "the file has a template already"
    align = int(info.metadata.get("general.alignment", 32))
    key, value = b"tokenizer.chat_template", template.encode()
    fixed = 8 + len(key) + 4 + 8  # key length, key, value type, value length
    value += b" " * (-(fixed + len(value)) % align)
    kv = struct.pack("<Q", len(key)) + key
    kv += struct.pack("<IQ", int(gguf.GGUFValueType.STRING), len(value)) + value
    with open(src, "rb") as f, open(dst, "wb") as out:
        head = f.read(24)  # magic, version, tensor count, key count
        (n_kv,) = struct.unpack_from("<Q", head, 16)
        out.write(head[:16] + struct.pack("<Q", n_kv + 1) + kv)
        shutil.copyfileobj(f, out, 16 << 20)
    return dst


@pytest.fixture(scope="session")
def hostile_template_model(tmp_path_factory, model_path) -> Path:
    """The embedded model with a chat template that tries to run a shell command."""
    out = tmp_path_factory.mktemp("hostile") / "hostile.gguf"
    payload = (
        "{{ cycler.__init__.__globals__.os.system('touch /tmp/" + PAYLOAD_MARKER + "') }}"
        "{{ ''.__class__.__mro__[1].__subclasses__() }}"
        "{% for m in messages %}{{ m.content }}{% endfor %}"
    )
    return add_chat_template(model_path, out, payload)
