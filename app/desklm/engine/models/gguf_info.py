"""GGUF header validation and metadata, before llama.cpp ever sees a file.

``gguf.GGUFReader`` builds a numpy view of every vocabulary entry and takes ~8 s on the
embedded model's 262k-token vocabulary, so the header is parsed here directly (``struct`` over an
``mmap``), using the ``gguf`` package's value-type and quantization tables. Every length and
count is bounds-checked against the file, so a truncated or corrupted header gives a reason,
never an exception from deep inside a parser, and never reaches llama.cpp.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from desklm.errors import DeskLMError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# Architectures llama.cpp (as bundled with llama-cpp-python 0.3.x) can run.
SUPPORTED_ARCHITECTURES = frozenset(
    """llama llama4 deci falcon falcon-h1 grok gpt2 gptj gptneox mpt baichuan starcoder
    starcoder2 refact bert modern-bert nomic-bert nomic-bert-moe neo-bert jina-bert-v2
    jina-bert-v3 bloom stablelm qwen qwen2 qwen2moe qwen2vl qwen3 qwen3moe qwen3next qwen3vl
    qwen3vlmoe phi2 phi3 phimoe plamo plamo2 codeshell orion internlm2 minicpm minicpm3
    gemma gemma2 gemma3 gemma3n gemma-embedding mamba mamba2 jamba xverse command-r cohere2
    dbrx olmo olmo2 olmoe openelm arctic deepseek deepseek2 chatglm glm4 glm4moe bitnet t5
    t5encoder jais nemotron nemotron_h exaone exaone4 rwkv6 rwkv6qwen2 rwkv7 arwkv7 granite
    granitemoe granitehybrid chameleon plm bailingmoe bailingmoe2 dots1 arcee ernie4_5
    ernie4_5-moe hunyuan-moe hunyuan-dense smollm3 gpt-oss lfm2 lfm2moe dream smallthinker
    llada llada-moe seed_oss grovemoe apertus minimax-m2 cogvlm afmoe mistral3
    pangu-embedded""".split()
)

_SCALAR = {  # GGUFValueType -> struct format
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}


@dataclass
class GGUFInfo:
    """What DeskLM needs to know about a model file before (and after) loading it."""

    path: Path
    file_size: int
    version: int
    architecture: str
    name: str
    metadata: dict[str, Any]
    tensor_count: int
    tensor_data_end: int
    arrays: dict[str, int] = field(default_factory=dict)  # array key -> element count
    layer_bytes: dict[int, int] = field(default_factory=dict)  # blk.N tensors' bytes by N
    other_bytes: int = 0  # embeddings, output head and other tensors outside the blocks

    def arch_value(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(f"{self.architecture}.{key}", default)

    @property
    def context_length(self) -> int:
        return int(self.arch_value("context_length", 0) or 0)

    @property
    def block_count(self) -> int:
        return int(self.arch_value("block_count", 0) or 0)

    @property
    def chat_template(self) -> str | None:
        t = self.metadata.get("tokenizer.chat_template")
        return t if isinstance(t, str) else None

    def summary(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "name": self.name,
            "architecture": self.architecture,
            "file_size": self.file_size,
            "context_length": self.context_length,
            "layers": self.block_count,
            "has_chat_template": self.chat_template is not None,
        }


class _Cursor:
    def __init__(self, buf: mmap.mmap | bytes, size: int) -> None:
        self.buf, self.size, self.pos = buf, size, 0
        self.where = "header"

    def need(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise DeskLMError(f"file is truncated in the {self.where}")

    def unpack(self, fmt: str) -> Any:
        n = struct.calcsize("<" + fmt)
        self.need(n)
        v = struct.unpack_from("<" + fmt, self.buf, self.pos)[0]
        self.pos += n
        return v

    def string(self) -> str:
        n = self.unpack("Q")
        self.need(n)
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        buf, pos, size = self.buf, self.pos, self.size
        unpack = struct.Struct("<Q").unpack_from
        for _ in range(count):
            if pos + 8 > size:
                raise DeskLMError(f"file is truncated in the {self.where}")
            pos += 8 + unpack(buf, pos)[0]
            if pos > size:
                raise DeskLMError(f"file is truncated in the {self.where}")
        self.pos = pos


def _value(cur: _Cursor, vtype: int, key: str, arrays: dict[str, int]) -> Any:
    if vtype in _SCALAR:
        return cur.unpack(_SCALAR[vtype])
    if vtype == 8:
        return cur.string()
    if vtype == 9:
        etype = cur.unpack("I")
        count = cur.unpack("Q")
        arrays[key] = count
        if etype == 8:
            cur.need(8 * count)  # at least a length per element: rejects absurd counts at once
            if count > 64:  # vocabularies: skip, only the count is kept
                cur.skip_strings(count)
                return None
            return [cur.string() for _ in range(count)]
        if etype in _SCALAR:
            width = struct.calcsize("<" + _SCALAR[etype])
            cur.need(width * count)
            if count > 64:
                cur.pos += width * count
                return None
            return [cur.unpack(_SCALAR[etype]) for _ in range(count)]
        if etype == 9:
            raise DeskLMError(f"metadata is corrupted: nested array in '{key}'")
        raise DeskLMError(f"metadata is corrupted: unknown array type {etype} in '{key}'")
    raise DeskLMError(f"metadata is corrupted: unknown value type {vtype} for '{key}'")


def check_path(path: str | os.PathLike[str]) -> Path:
    """Reasons for a path that cannot be a model file at all."""
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except FileNotFoundError:
        if p.is_symlink():
            raise DeskLMError(f"{p}: broken symbolic link") from None
        raise DeskLMError(f"{p}: no such file") from None
    except OSError as e:
        if e.errno == 40:  # ELOOP
            raise DeskLMError(f"{p}: symbolic link loop") from None
        raise DeskLMError(f"{p}: cannot read ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise DeskLMError(f"{p}: is a directory, not a GGUF model file")
    if not stat.S_ISREG(st.st_mode):
        raise DeskLMError(f"{p}: not a regular file")
    if st.st_size == 0:
        raise DeskLMError(f"{p}: file is empty")
    if not os.access(p, os.R_OK):
        raise DeskLMError(f"{p}: permission denied")
    return p


def read_gguf(path: str | os.PathLike[str]) -> GGUFInfo:
    """Validate a GGUF file's header and return its metadata, or raise with the reason."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    p = check_path(path)
    size = p.stat().st_size
    try:
        with open(p, "rb") as f:
            head = f.read(4)
            if head != GGUF_MAGIC:
                kind = "a text file" if _looks_like_text(head + f.read(508)) else "not GGUF data"
                raise DeskLMError(f"{p.name}: not a GGUF model file ({kind})")
            if size < 24:
                raise DeskLMError(f"{p.name}: file is truncated in the header")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return _parse(p, mm, size, GGML_QUANT_SIZES, GGMLQuantizationType)
    except PermissionError:
        raise DeskLMError(f"{p}: permission denied") from None
    except DeskLMError as e:
        msg = str(e)
        raise DeskLMError(
            msg if msg.startswith(p.name) or msg.startswith(str(p)) else f"{p.name}: {msg}"
        ) from None
    except OSError as e:
        raise DeskLMError(f"{p.name}: cannot read ({e.strerror or e})") from None


def _looks_like_text(data: bytes) -> bool:
    if not data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(b >= 9 for b in data)


def read_gguf_header(data: bytes, file_size: int, name: str = "remote.gguf") -> GGUFInfo:
    """Parse the header from the first bytes of a file (e.g. a ranged download).

    Raises DeskLMError "truncated in the metadata/tensor information" when ``data`` is too
    short: fetch more and try again.
    """
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    if data[:4] != GGUF_MAGIC:
        raise DeskLMError(f"{name}: not a GGUF model file")
    return _parse(
        Path(name), data, len(data), GGML_QUANT_SIZES, GGMLQuantizationType, file_size=file_size
    )


def _parse(
    p: Path,
    mm: mmap.mmap | bytes,
    size: int,
    quant_sizes: Any,
    qtype: Any,
    file_size: int | None = None,
) -> GGUFInfo:
    file_size = size if file_size is None else file_size
    cur = _Cursor(mm, size)
    cur.pos = 4
    version = cur.unpack("I")
    if version not in SUPPORTED_VERSIONS:
        raise DeskLMError(f"unsupported GGUF version {version} (supported: 2 and 3)")
    n_tensors = cur.unpack("Q")
    n_kv = cur.unpack("Q")
    if n_kv > 1_000_000 or n_tensors > 10_000_000:
        raise DeskLMError("header is corrupted (impossible tensor or key count)")
    cur.where = "metadata"
    meta: dict[str, Any] = {}
    arrays: dict[str, int] = {}
    for _ in range(n_kv):
        key = cur.string()
        vtype = cur.unpack("I")
        meta[key] = _value(cur, vtype, key, arrays)
    cur.where = "tensor information"
    ends: list[int] = []
    layer_bytes: dict[int, int] = {}
    other_bytes = 0
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.unpack("I")
        if n_dims > 8:
            raise DeskLMError(f"tensor '{name}' is corrupted ({n_dims} dimensions)")
        n_el = 1
        for _ in range(n_dims):
            n_el *= cur.unpack("Q")
        ttype = cur.unpack("I")
        offset = cur.unpack("Q")
        try:
            block, type_size = quant_sizes[qtype(ttype)]
        except (ValueError, KeyError):
            raise DeskLMError(f"tensor '{name}' has an unknown data type {ttype}") from None
        nbytes = n_el * type_size // block
        ends.append(offset + nbytes)
        parts = name.split(".")
        if len(parts) > 2 and parts[0] == "blk" and parts[1].isdigit():
            layer_bytes[int(parts[1])] = layer_bytes.get(int(parts[1]), 0) + nbytes
        else:
            other_bytes += nbytes
    align = meta.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(align, int) or align <= 0 or align & (align - 1):
        raise DeskLMError(f"metadata is corrupted (alignment {align!r})")
    data_start = (cur.pos + align - 1) // align * align
    data_end = data_start + (max(ends) if ends else 0)
    if data_end > file_size:
        raise DeskLMError(
            f"file is truncated in the tensor data ({file_size:,} bytes, needs {data_end:,})"
        )
    arch = meta.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise DeskLMError("metadata is corrupted (no general.architecture)")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise DeskLMError(f"architecture '{arch}' is not supported by this version of llama.cpp")
    if n_tensors == 0:
        raise DeskLMError("file holds no tensors (a vocabulary-only or adapter file?)")
    general_name = meta.get("general.name")
    return GGUFInfo(
        path=p,
        file_size=file_size,
        version=version,
        architecture=arch,
        name=general_name if isinstance(general_name, str) and general_name else p.stem,
        metadata=meta,
        tensor_count=n_tensors,
        tensor_data_end=data_end,
        arrays=arrays,
        layer_bytes=layer_bytes,
        other_bytes=other_bytes,
    )
