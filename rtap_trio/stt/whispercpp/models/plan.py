"""The conversion plan: which CT2 variable becomes which whisper.cpp tensor, in what type."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from rtap_trio.errors import ModelError

from .ct2 import Ct2Model
from .ggml import GGML_BLOCKS, GGML_F16, GGML_F32, GGML_Q5_0, GGML_Q8_0, FType, Hparams, ggml_nbytes

# The quantised weight types: what the 2-D weights become.
_QUANTISED: Mapping[str, int] = MappingProxyType({"q8_0": GGML_Q8_0, "q5_0": GGML_Q5_0})


@dataclass(frozen=True)
class TensorPlan:
    """One tensor to write: its whisper.cpp name, its CT2 source (rows of it), shape and type."""

    ggml_name: str
    source: str
    rows: tuple[int, int] | None  # slice of a fused q/k/v projection
    shape: tuple[int, ...]  # numpy (row-major) shape as written
    ggml_type: int  # GGML_F32, GGML_F16, GGML_Q8_0 or GGML_Q5_0

    @property
    def nbytes(self) -> int:
        return ggml_nbytes(self.ggml_type, int(np.prod(self.shape, dtype=np.int64)))

    def header(self) -> bytes:
        name = self.ggml_name.encode("utf-8")
        # ggml lists dimensions innermost first, i.e. numpy's shape reversed.
        dims = tuple(reversed(self.shape))
        return struct.pack(f"<3i{len(dims)}i", len(dims), len(name), self.ggml_type, *dims) + name


def _count_layers(ct2: Ct2Model, prefix: str) -> int:
    n = 0
    while ct2.has(f"{prefix}/layer_{n}/ffn/linear_0/weight"):
        n += 1
    return n


def hparams_of(ct2: Ct2Model) -> Hparams:
    """The ggml header's hyperparameters, read off the CT2 tensor shapes and scalars."""
    emb = ct2.shape("decoder/embeddings/weight")
    enc_pos = ct2.shape("encoder/position_encodings/encodings")
    dec_pos = ct2.shape("decoder/position_encodings/encodings")
    conv1 = ct2.shape("encoder/conv1/weight")
    if len(emb) != 2 or len(enc_pos) != 2 or len(dec_pos) != 2 or len(conv1) != 3:
        raise ModelError("CT2 Whisper model has unexpected embedding or conv shapes")
    return Hparams(
        n_vocab=emb[0],
        n_audio_ctx=enc_pos[0],
        n_audio_state=enc_pos[1],
        n_audio_head=ct2.scalar_int("encoder/num_heads"),
        n_audio_layer=_count_layers(ct2, "encoder"),
        n_text_ctx=dec_pos[0],
        n_text_state=dec_pos[1],
        n_text_head=ct2.scalar_int("decoder/num_heads"),
        n_text_layer=_count_layers(ct2, "decoder"),
        n_mels=conv1[1],
    )


def plan_tensors(ct2: Ct2Model, hp: Hparams, ftype: FType) -> list[TensorPlan]:
    """Every tensor whisper.cpp expects, in openai-whisper state_dict order.

    whisper.cpp fails the load on an unknown tensor, a missing tensor, or a
    tensor of a type other than the one it allocated, so the types mirror
    convert-pt-to-ggml.py: 1-D tensors, conv biases and positional embeddings
    in f32, everything else in f16 (or all f32). For q8_0 and q5_0 the 2-D weights
    are quantised as whisper.cpp's quantize tool does it, which leaves the 3-D
    convolution kernels in f16 (whisper.cpp allocates them f16 for any
    quantised type).
    """
    plans: list[TensorPlan] = []

    def add(ggml_name: str, source: str, rows: tuple[int, int] | None = None) -> None:
        shape = ct2.shape(source)
        if rows is not None:
            shape = (rows[1] - rows[0], *shape[1:])
        if ggml_name.endswith(("conv1.bias", "conv2.bias")):
            shape = (shape[0], 1)  # whisper.cpp adds it broadcast over time
            ggml_type = GGML_F32
        elif ggml_name.endswith("positional_embedding") or ftype == "f32" or len(shape) < 2:
            ggml_type = GGML_F32
        elif ftype in _QUANTISED and len(shape) == 2:
            ggml_type = _QUANTISED[ftype]
            if shape[1] % GGML_BLOCKS[ggml_type][0]:
                raise ModelError(
                    f"{ggml_name}: rows of {shape[1]} do not split into {ftype} blocks"
                )
        else:
            ggml_type = GGML_F16
        plans.append(TensorPlan(ggml_name, source, rows, shape, ggml_type))

    def linear(
        ggml: str, ct2_name: str, rows: tuple[int, int] | None = None, bias: bool = True
    ) -> None:
        add(f"{ggml}.weight", f"{ct2_name}/weight", rows)
        if bias:
            add(f"{ggml}.bias", f"{ct2_name}/bias", rows)

    def norm(ggml: str, ct2_name: str) -> None:
        add(f"{ggml}.weight", f"{ct2_name}/gamma")
        add(f"{ggml}.bias", f"{ct2_name}/beta")

    def self_attention(ggml: str, ct2_name: str, d: int) -> None:
        # CT2 fuses [q; k; v] along the output rows. Whisper's key projection
        # has no bias (CT2 stores zeros), and whisper.cpp has no tensor for it.
        fused = f"{ct2_name}/linear_0"
        if ct2.shape(f"{fused}/weight")[0] != 3 * d:
            raise ModelError(
                f"CT2 Whisper model: {fused} is not a fused q/k/v projection of width {d}"
            )
        linear(f"{ggml}.query", fused, (0, d))
        linear(f"{ggml}.key", fused, (d, 2 * d), bias=False)
        linear(f"{ggml}.value", fused, (2 * d, 3 * d))
        linear(f"{ggml}.out", f"{ct2_name}/linear_1")

    def cross_attention(ggml: str, ct2_name: str, d: int) -> None:
        # Query from the decoder state, fused [k; v] over the encoder output.
        linear(f"{ggml}.query", f"{ct2_name}/linear_0")
        fused = f"{ct2_name}/linear_1"
        if ct2.shape(f"{fused}/weight")[0] != 2 * d:
            raise ModelError(
                f"CT2 Whisper model: {fused} is not a fused k/v projection of width {d}"
            )
        linear(f"{ggml}.key", fused, (0, d), bias=False)
        linear(f"{ggml}.value", fused, (d, 2 * d))
        linear(f"{ggml}.out", f"{ct2_name}/linear_2")

    def mlp(ggml: str, ct2_name: str) -> None:
        linear(f"{ggml}.mlp.0", f"{ct2_name}/linear_0")
        linear(f"{ggml}.mlp.2", f"{ct2_name}/linear_1")
        norm(f"{ggml}.mlp_ln", f"{ct2_name}/layer_norm")

    d_audio = hp.n_audio_state
    add("encoder.positional_embedding", "encoder/position_encodings/encodings")
    linear("encoder.conv1", "encoder/conv1")
    linear("encoder.conv2", "encoder/conv2")
    for i in range(hp.n_audio_layer):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        self_attention(f"{dst}.attn", f"{src}/self_attention", d_audio)
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        mlp(dst, f"{src}/ffn")
    norm("encoder.ln_post", "encoder/layer_norm")

    d_text = hp.n_text_state
    add("decoder.positional_embedding", "decoder/position_encodings/encodings")
    # decoder/projection is an alias of the embedding; whisper.cpp ties them too.
    add("decoder.token_embedding.weight", "decoder/embeddings/weight")
    for i in range(hp.n_text_layer):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        self_attention(f"{dst}.attn", f"{src}/self_attention", d_text)
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        cross_attention(f"{dst}.cross_attn", f"{src}/attention", d_text)
        norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
        mlp(dst, f"{src}/ffn")
    norm("decoder.ln", "decoder/layer_norm")
    return plans
