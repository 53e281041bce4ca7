"""Tickets that stay small where they run: compact tables, row-wise quantised
values, row remapping, and RecBole models that score through them.

One pruned 2-D table is held with its entity rows first (an item-input
``nn.Linear`` of the autoencoders, ``(h, n_items)``, is held transposed: one
row per item) as

* ``remap``   int32 ``[n]``, only when it saves bytes: table row -> stored row,
  -1 for a row with no active entry (looked up as a zero vector; FBGEMM's
  ``index_remapping``);
* ``bitmap``  uint8 ``[m, ceil(d/8)]``: the active entries of each stored row;
* ``offsets`` int32 ``[m]``: where a stored row's values start;
* ``values``  ``[k]`` in fp32, fp16, or uint8 codes of a row-wise affine
  int8 format, ``v = code * scale + bias`` with fp16 ``scale`` and ``bias``
  ``[m]`` (FBGEMM's row-wise 8-bit layout with half-precision scale/bias).

Why a bitmap and not CSR: at ``d = 64`` it costs 1/32 of the dense fp32
table plus 1/64 for the offsets, against 2(1-s)/4 for CSR's 16-bit column
indices, so it is smaller for every s < 0.94; and a row lookup has a fixed
shape (unpack ``d`` bits, a cumulative count, one gather), so it runs on any
device without a host synchronisation, where CSR's ragged rows need one to
size their output.  :func:`layout_bytes` counts every layout for the report.

A RecBole model whose prunable tables are replaced by :class:`CompactEmbedding`
/ :class:`CompactLinear` (:func:`compact_model`) keeps its class, so RecBole's
evaluator and a user's code call ``predict``/``full_sort_predict`` as usual;
rows are materialised on lookup and a full-sort pass streams the item table
in chunks of :attr:`CompactTable.chunk_rows` rows, so no dense copy of a
pruned table exists.  What a backbone's scoring changes for that (BPR's
streamed full sort, LightGCN's streamed first propagation) is declared with
the backbone (``recbole_lth/backbones/``).
"""
from __future__ import annotations

import torch
from torch import nn

VALUE_FORMATS = ("fp32", "fp16", "int8")
# Entries one streamed chunk materialises (~1 MB of transient tensors).
CHUNK_ENTRIES = 2**16
# Scores (or activations) one block product writes before it is copied into
# place: 4 MB, so a batch of many users adds no full-width transient.
PRODUCT_ENTRIES = 2**20
_BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)


def _bit_weights(device) -> torch.Tensor:
    return torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=device)


def pack_rows(mask: torch.Tensor) -> torch.Tensor:
    """Bool ``[m, d]`` -> uint8 ``[m, ceil(d/8)]``, each row padded to whole bytes (MSB first)."""
    rows, width = mask.shape
    pad = (-width) % 8
    bits = mask.to(torch.uint8)
    if pad:
        bits = torch.cat([bits, bits.new_zeros(rows, pad)], dim=1)
    return (bits.view(rows, -1, 8) * _bit_weights(mask.device)).sum(dim=2, dtype=torch.uint8)


def unpack_rows(bitmap: torch.Tensor, width: int) -> torch.Tensor:
    """Inverse of :func:`pack_rows`: bool ``[m, width]``."""
    bits = (bitmap.unsqueeze(-1) & _bit_weights(bitmap.device)) != 0
    return bits.view(bitmap.shape[0], -1)[:, :width]


def quantise_rows(values: torch.Tensor, row_of_value: torch.Tensor, rows: int):
    """Row-wise affine 8-bit codes of ``values`` (each value's stored row in
    ``row_of_value``): ``(codes uint8, scale fp16 [rows], bias fp16 [rows])``.
    The codes are computed against the fp16-rounded scale and bias, the ones
    the reader will use."""
    values = values.float()
    inf = torch.full((rows,), float("inf"), device=values.device)
    low = inf.scatter_reduce(0, row_of_value, values, "amin")
    high = (-inf).scatter_reduce(0, row_of_value, values, "amax")
    low = torch.where(torch.isfinite(low), low, torch.zeros_like(low))
    high = torch.where(torch.isfinite(high), high, low)
    bias = low.half()
    scale = ((high - bias.float()) / 255).half()
    step = torch.where(scale > 0, scale.float(), torch.ones_like(low))
    codes = ((values - bias.float()[row_of_value]) / step[row_of_value]).round().clamp(0, 255)
    return codes.to(torch.uint8), scale, bias


class CompactTable(nn.Module):
    """One pruned table in the layout of this module's docstring.  ``shape``
    is the stored (entity-rows-first) shape ``(n, d)``; ``transposed`` says
    whether the model's tensor is its transpose."""

    def __init__(self, shape, bitmap, offsets, values, value_format="fp32", scale=None, bias=None,
                 remap=None, transposed=False, chunk_rows=None):
        super().__init__()
        if value_format not in VALUE_FORMATS:
            raise ValueError(f"value format {value_format!r}: allowed values are {', '.join(VALUE_FORMATS)}")
        self.shape = tuple(int(s) for s in shape)
        self.value_format = value_format
        self.transposed = bool(transposed)
        self.kept = int(values.numel())
        self.chunk_rows = int(chunk_rows or max(1, CHUNK_ENTRIES // max(1, self.shape[1])))
        self.register_buffer("bitmap", bitmap)
        self.register_buffer("offsets", offsets)
        self.register_buffer("values", values)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", bias)
        self.register_buffer("remap", remap)

    # ------------------------------------------------------------ building
    @classmethod
    def from_rows(cls, weight: torch.Tensor, mask: torch.Tensor, value_format="fp32", remap="auto",
                  transposed=False, chunk_rows=None) -> "CompactTable":
        """From a dense ``[n, d]`` table and its mask (entity rows first)."""
        mask = mask.to(torch.bool)
        nonempty = mask.any(dim=1)
        return cls.from_parts(weight.shape, nonempty, pack_rows(mask[nonempty]), weight[mask],
                              value_format, remap, transposed, chunk_rows)

    @classmethod
    def from_parts(cls, shape, nonempty, bitmap, values, value_format="fp32", remap="auto", transposed=False,
                   chunk_rows=None, scale=None, bias=None) -> "CompactTable":
        """From the stored parts of an export: which rows have an active
        entry, their bitmaps, and their values in row-major order (already
        quantised when ``scale``/``bias`` are given)."""
        n, d = (int(s) for s in shape)
        m = int(bitmap.shape[0])
        counts = unpack_rows_count(bitmap, d)
        starts = (torch.cumsum(counts, 0) - counts).to(torch.int32)
        if value_format == "int8" and scale is None:
            row_of_value = torch.repeat_interleave(torch.arange(m, device=values.device), counts)
            values, scale, bias = quantise_rows(values, row_of_value, m)
        elif value_format == "fp16":
            values = values.half()
        use_remap = remap if remap != "auto" else (
            layout_bytes(counts, d, n, value_format, remapped=True)
            < layout_bytes(counts, d, n, value_format, remapped=False))
        if use_remap:
            index = torch.full((n,), -1, dtype=torch.int32, device=bitmap.device)
            index[nonempty] = torch.arange(m, dtype=torch.int32, device=bitmap.device)
            return cls((n, d), bitmap, starts, values, value_format, scale, bias, index, transposed, chunk_rows)
        # Every row stored: the empty ones as zero bitmaps.
        full_bitmap = bitmap.new_zeros(n, bitmap.shape[1])
        full_bitmap[nonempty] = bitmap
        full_starts = torch.zeros(n, dtype=torch.int32, device=bitmap.device)
        full_starts[nonempty] = starts
        if scale is not None:
            full_scale, full_bias = scale.new_zeros(n), bias.new_zeros(n)
            full_scale[nonempty], full_bias[nonempty] = scale, bias
            scale, bias = full_scale, full_bias
        return cls((n, d), full_bitmap, full_starts, values, value_format, scale, bias, None, transposed,
                   chunk_rows)

    # ------------------------------------------------------------- lookups
    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """Rows ``index`` (any shape) as fp32 ``[*index.shape, d]``; pruned
        entries and remapped-away rows are exact zeros.  Looked up
        ``CHUNK_ENTRIES // d`` rows at a time, so the transients of a large
        lookup stay those of one block."""
        flat = index.reshape(-1)
        block = max(1, CHUNK_ENTRIES // max(1, self.shape[1]))
        if flat.numel() <= block:
            return self._lookup(flat).view(*index.shape, self.shape[1])
        out = torch.empty(flat.numel(), self.shape[1], device=self.bitmap.device)
        for start in range(0, flat.numel(), block):
            out[start:start + block] = self._lookup(flat[start:start + block])
        return out.view(*index.shape, self.shape[1])

    def _lookup(self, flat: torch.Tensor) -> torch.Tensor:
        flat = flat.long()
        stored = flat
        if self.remap is not None:
            stored = self.remap[flat].long()
            present = stored >= 0
            stored = stored.clamp(min=0)
        if self.bitmap.shape[0] == 0 or self.kept == 0:
            return torch.zeros(flat.numel(), self.shape[1], device=self.bitmap.device)
        bits = unpack_rows(self.bitmap[stored], self.shape[1])
        position = self.offsets[stored].long().unsqueeze(1) + bits.cumsum(1) - 1
        kept = self.values[position.clamp(0, self.kept - 1)].float()
        if self.value_format == "int8":
            kept = kept * self.scale[stored].float().unsqueeze(1) + self.bias[stored].float().unsqueeze(1)
        if self.remap is not None:
            bits = bits & present.unsqueeze(1)
        return torch.where(bits, kept, torch.zeros((), device=kept.device))

    def row_range(self, start: int, stop: int) -> torch.Tensor:
        return self.rows(torch.arange(start, stop, device=self.bitmap.device))

    def chunks(self):
        """``(start, stop)`` of the row blocks a streamed pass materialises."""
        for start in range(0, self.shape[0], self.chunk_rows):
            yield start, min(start + self.chunk_rows, self.shape[0])

    def dense(self) -> torch.Tensor:
        """The table as the model's tensor (for unpacking an export; inference never calls it)."""
        full = torch.cat([self.row_range(a, b) for a, b in self.chunks()]) if self.shape[0] else \
            torch.zeros(self.shape, device=self.bitmap.device)
        return full.t().contiguous() if self.transposed else full

    def mask(self) -> torch.Tensor:
        rows = torch.arange(self.shape[0], device=self.bitmap.device)
        stored = self.remap[rows].long() if self.remap is not None else rows
        bits = unpack_rows(self.bitmap[stored.clamp(min=0)], self.shape[1]) & (stored >= 0).unsqueeze(1)
        return bits.t().contiguous() if self.transposed else bits

    def nbytes(self) -> int:
        """Resident bytes of every tensor this table holds."""
        return sum(t.numel() * t.element_size() for t in self.buffers())


def unpack_rows_count(bitmap: torch.Tensor, width: int) -> torch.Tensor:
    """Active entries per stored row (int64), in row blocks so that no
    ``[m, d]`` transient exists at once."""
    counts = []
    block = max(1, CHUNK_ENTRIES // max(1, width))
    for start in range(0, bitmap.shape[0], block):
        counts.append(unpack_rows(bitmap[start:start + block], width).sum(dim=1))
    return torch.cat(counts) if counts else torch.zeros(0, dtype=torch.long, device=bitmap.device)


# ----------------------------------------------------------------- bytes
_VALUE_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}


def layout_bytes(row_counts: torch.Tensor, width: int, rows: int | None = None, value_format: str = "fp32",
                 remapped: bool = False) -> int:
    """Resident bytes of one table in the bitmap layout (what
    :meth:`CompactTable.nbytes` holds), from its active entries per row."""
    rows = int(row_counts.numel()) if rows is None else rows
    kept = int(row_counts.sum())
    stored = int((row_counts > 0).sum()) if remapped else rows
    per_row = -(-width // 8) + 4 + (4 if value_format == "int8" else 0)  # bitmap, offset, scale+bias
    return stored * per_row + kept * _VALUE_BYTES[value_format] + (4 * rows if remapped else 0)


def csr_bytes(row_counts: torch.Tensor, index_bytes: int, value_bytes: int = 4) -> int:
    """CSR: a column index and a value per active entry, ``n + 1`` int32 row pointers."""
    kept = int(row_counts.sum())
    return kept * (index_bytes + value_bytes) + 4 * (row_counts.numel() + 1)


def table_layouts(mask: torch.Tensor, axis: int = 0) -> dict:
    """Every layout's bytes of one masked table (rows along ``axis``), and its empty rows."""
    mask = mask.to(torch.bool)
    if mask.dim() == 1:
        mask = mask.unsqueeze(0)
    rows_first = mask.t() if axis == 1 else mask
    rows_first = rows_first.reshape(rows_first.shape[0], -1)
    counts = rows_first.sum(dim=1)
    width = rows_first.shape[1]
    return {
        "dense fp32": 4 * mask.numel(),
        "bitmap+fp32": layout_bytes(counts, width),
        "bitmap+int8": layout_bytes(counts, width, value_format="int8"),
        "CSR int32": csr_bytes(counts, 4),
        "CSR int16": csr_bytes(counts, 2) if width < 2**16 else None,
        "bitmap+fp32 remapped": layout_bytes(counts, width, remapped=True),
        "bitmap+int8 remapped": layout_bytes(counts, width, value_format="int8", remapped=True),
        "empty rows": int((counts == 0).sum()),
        "rows": int(counts.numel()),
    }


# --------------------------------------------------------------- modules
class CompactEmbedding(nn.Module):
    """``nn.Embedding`` whose rows come from a :class:`CompactTable`.  It has
    no ``weight``: code that would read the whole table fails loudly instead
    of silently building a dense copy."""

    def __init__(self, table: CompactTable):
        super().__init__()
        self.table = table
        self.num_embeddings, self.embedding_dim = table.shape

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.table.rows(index)


class CompactLinear(nn.Module):
    """``nn.Linear`` over a :class:`CompactTable`, streamed over the table's
    rows: an item-output layer (``(n_items, h)``, rows = output units) writes
    its output in column blocks; an item-input layer (held transposed, rows =
    input units) sums the blocks' products."""

    def __init__(self, table: CompactTable, bias: torch.Tensor | None):
        super().__init__()
        self.table = table
        self.register_buffer("bias", bias)
        if table.transposed:
            self.in_features, self.out_features = table.shape
        else:
            self.out_features, self.in_features = table.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_shape, x = x.shape[:-1], x.reshape(-1, x.shape[-1])
        if self.table.transposed:
            out = x.new_zeros(x.shape[0], self.out_features)
            for start, stop in self.table.chunks():
                rows = self.table.row_range(start, stop)
                for first, last in _blocks(x.shape[0], stop - start):
                    out[first:last] += x[first:last, start:stop] @ rows
        else:
            out = stream_scores(x, self.table)
        out = out.view(*batch_shape, self.out_features)
        return out + self.bias if self.bias is not None else out


def _blocks(batch: int, chunk: int):
    """Row blocks of a batch whose product with a chunk stays within PRODUCT_ENTRIES."""
    step = max(1, PRODUCT_ENTRIES // max(1, chunk))
    for first in range(0, batch, step):
        yield first, min(first + step, batch)


def stream_scores(queries: torch.Tensor, table: CompactTable) -> torch.Tensor:
    """``queries @ table.T`` (``[B, n]``), the table materialised a chunk at a
    time and the products written block by block."""
    out = queries.new_empty(queries.shape[0], table.shape[0])
    for start, stop in table.chunks():
        rows_t = table.row_range(start, stop).t()
        for first, last in _blocks(queries.shape[0], stop - start):
            out[first:last, start:stop] = queries[first:last] @ rows_t
    return out


def compact_model(skeleton: nn.Module, tables: dict[str, CompactTable], dense_state: dict) -> nn.Module:
    """``skeleton`` (a RecBole model whose parameters are on the meta device,
    :func:`recbole_lth.engine.builder.skeleton_model`) with each prunable tensor
    ``tables[name]`` replaced by its compact module and every other tensor
    taken from ``dense_state``; in eval mode.

    How the model then scores through its compact modules is its backbone's
    (``Backbone.compact``, applied by :func:`recbole_lth.deploy.export.compact_model`),
    as is ``final_embeddings``.
    """
    device = next((t.bitmap.device for t in tables.values()), torch.device("cpu"))
    for name, table in tables.items():
        path, _, leaf = name.rpartition(".")
        module = skeleton.get_submodule(path)
        if leaf != "weight" or not isinstance(module, (nn.Embedding, nn.Linear)):
            raise ValueError(f"{name}: only the weight of an nn.Embedding or nn.Linear can be held compact")
        if isinstance(module, nn.Embedding):
            replacement = CompactEmbedding(table)
        else:
            bias = dense_state.get(f"{path}.bias")
            replacement = CompactLinear(table, None if bias is None else bias.to(device))
        skeleton.set_submodule(path, replacement)
    compact_names = {f"{p}.bias" for p in (n.rpartition(".")[0] for n in tables)}
    unused = set(dense_state) - compact_names
    for module_name, module in skeleton.named_modules():
        if isinstance(module, CompactTable):
            continue
        prefix = f"{module_name}." if module_name else ""
        for leaf, param in list(module.named_parameters(recurse=False)):
            if param.is_meta:
                value = _stored(dense_state, prefix + leaf)
                module.register_parameter(leaf, nn.Parameter(value.to(device), requires_grad=False))
                unused.discard(prefix + leaf)
        for leaf, buffer in list(module.named_buffers(recurse=False)):
            if buffer is not None and buffer.is_meta:
                module.register_buffer(leaf, _stored(dense_state, prefix + leaf).to(device))
                unused.discard(prefix + leaf)
    if unused:
        raise ValueError(f"the export holds tensors the model does not have: {', '.join(sorted(unused))}")
    return skeleton.eval()


def _stored(state: dict, name: str) -> torch.Tensor:
    if name not in state:
        raise ValueError(f"the export has no tensor {name!r} the model needs")
    return state[name]


def resident_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes held by each compact table of a model, and by everything else
    (parameters, buffers and tensor attributes such as LightGCN's graph)."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, CompactTable):
            out[name] = module.nbytes()
    compact = {id(t) for m in model.modules() if isinstance(m, CompactTable) for t in m.buffers()}
    rest = {id(t): t for t in list(model.parameters()) + list(model.buffers()) if id(t) not in compact}
    for module in model.modules():
        rest.update({id(t): t for t in vars(module).values() if isinstance(t, torch.Tensor)})
    out["(rest)"] = sum(_tensor_bytes(t) for t in rest.values())
    return out


def _tensor_bytes(tensor: torch.Tensor) -> int:
    if tensor.is_sparse:
        tensor = tensor.coalesce()
        return _tensor_bytes(tensor.indices()) + _tensor_bytes(tensor.values())
    return tensor.numel() * tensor.element_size()
