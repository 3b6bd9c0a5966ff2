"""Minimal safetensors reader and streaming writer for the benchmark peers.

Standard library + torch only (pip has no network here): the header is JSON,
tensor data are views into an mmap of the shard (torch.frombuffer), and the
writer lays out every shard's header up front so tensors can be written one at
a time, in order, without holding the model in memory.
"""

import json
import mmap
import os
import struct

import torch

DTYPES = {
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F32": torch.float32,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
NAMES = {v: k for k, v in DTYPES.items()}
FLOATS = ("BF16", "F16", "F32", "F64")


def element_size(dtype_name):
    return torch.empty(0, dtype=DTYPES[dtype_name]).element_size()


class Model:
    """A safetensors checkpoint: a .safetensors file or a directory of shards.

    tensors: name -> (path, dtype name, shape, data start, data end), in the
    order the shards list them.
    """

    def __init__(self, path):
        if os.path.isdir(path):
            files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
            if not files:
                raise FileNotFoundError(f"{path}: no .safetensors files")
            files = [os.path.join(path, f) for f in files]
        else:
            files = [path]
        self.files = files
        self.tensors = {}
        self._maps = {}
        for f in files:
            with open(f, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(n))
            base = 8 + n
            entries = [(k, v) for k, v in header.items() if k != "__metadata__"]
            entries.sort(key=lambda kv: kv[1]["data_offsets"][0])
            for name, e in entries:
                if name in self.tensors:
                    raise ValueError(f"{f}: tensor {name!r} appears in two shards")
                b, end = e["data_offsets"]
                self.tensors[name] = (f, e["dtype"], tuple(e["shape"]), base + b, base + end)

    def names(self):
        return list(self.tensors)

    def numel(self, name):
        n = 1
        for d in self.tensors[name][2]:
            n *= d
        return n

    def tensor(self, name):
        """A zero-copy view of the tensor's data in its stored dtype."""
        f, dt, shape, b, end = self.tensors[name]
        mm = self._maps.get(f)
        if mm is None:
            with open(f, "rb") as fh:
                # ACCESS_COPY: torch.frombuffer warns on read-only buffers; the
                # peers never write to these views, so no page is ever copied.
                mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
            self._maps[f] = mm
        count = (end - b) // element_size(dt)
        if count == 0:
            return torch.empty(shape, dtype=DTYPES[dt])
        return torch.frombuffer(mm, dtype=DTYPES[dt], count=count, offset=b).view(shape)


class StreamingWriter:
    """Writes tensors one at a time into shards of at most max_shard bytes.

    specs: [(name, dtype name, shape)] in write order. Headers (with every
    offset) are written when a shard is opened; write() must follow specs'
    order. Like Hugging Face: one shard is model.safetensors, more are
    model-0000i-of-0000n.safetensors plus model.safetensors.index.json.
    """

    def __init__(self, out_dir, specs, max_shard=5 * 10**9):
        os.makedirs(out_dir, exist_ok=True)
        self.out_dir = out_dir
        shards, cur, cur_bytes = [], [], 0
        for name, dt, shape in specs:
            n = element_size(dt)
            for d in shape:
                n *= d
            if cur and cur_bytes + n > max_shard:
                shards.append(cur)
                cur, cur_bytes = [], 0
            cur.append((name, dt, tuple(shape), n))
            cur_bytes += n
        if cur or not shards:
            shards.append(cur)
        self.shards = shards
        if len(shards) == 1:
            self.paths = [os.path.join(out_dir, "model.safetensors")]
        else:
            k = len(shards)
            self.paths = [os.path.join(out_dir, f"model-{i + 1:05d}-of-{k:05d}.safetensors") for i in range(k)]
        self.order = [(si, t) for si, s in enumerate(shards) for t in s]
        self.pos = 0
        self.fh = None
        self.open_shard = -1

    def _open(self, si):
        if self.fh is not None:
            self.fh.close()
        header, off = {"__metadata__": {"format": "pt"}}, 0
        for name, dt, shape, n in self.shards[si]:
            header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + n]}
            off += n
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self.fh = open(self.paths[si], "wb")
        self.fh.write(struct.pack("<Q", len(raw)))
        self.fh.write(raw)
        self.open_shard = si

    def write(self, name, t):
        si, (want, dt, shape, n) = self.order[self.pos]
        if name != want:
            raise ValueError(f"writer: got tensor {name!r}, expected {want!r}")
        if NAMES.get(t.dtype) != dt or tuple(t.shape) != shape:
            raise ValueError(f"writer: tensor {name!r}: got {t.dtype} {tuple(t.shape)}, planned {dt} {shape}")
        if si != self.open_shard:
            self._open(si)
        t = t.contiguous().reshape(-1)
        if t.numel():
            # Same-width integer view so numpy can expose the raw bytes (numpy
            # has no bfloat16); no copy.
            iv = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
            if t.dtype == torch.bool:
                t = t.to(torch.uint8)
            self.fh.write(memoryview(t.view(iv).numpy()).cast("B"))
        self.pos += 1

    def close(self):
        if self.pos != len(self.order):
            raise ValueError(f"writer: {len(self.order) - self.pos} tensors never written")
        if self.fh is None:  # no tensors at all: still write a valid empty file
            self._open(0)
        self.fh.close()
        if len(self.paths) > 1:
            wm = {name: os.path.basename(self.paths[si]) for si, (name, _, _, _) in self.order}
            total = sum(n for s in self.shards for (_, _, _, n) in s)
            with open(os.path.join(self.out_dir, "model.safetensors.index.json"), "w") as f:
                json.dump({"metadata": {"total_size": total}, "weight_map": wm}, f, indent=2)


def is_float(dtype_name):
    return dtype_name in FLOATS


def setup_threads(n):
    """Same thread count as the tiesmm run being compared (intra- and inter-op)."""
    if n and n > 0:
        torch.set_num_threads(n)
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:
            pass  # only settable before the first parallel op


def check_same_tensors(base, models):
    for m in models:
        for name, (_, dt, shape, _, _) in base.tensors.items():
            if name not in m.tensors:
                raise ValueError(f"{m.files[0]}: tensor {name!r} missing")
            if m.tensors[name][2] != shape:
                raise ValueError(f"{m.files[0]}: tensor {name!r}: shape {m.tensors[name][2]} != base {shape}")
