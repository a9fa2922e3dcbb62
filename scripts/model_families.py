"""The model families of the test models (scripts/export_test_models.py): how each tiny
random-weight transformer is built from a transformers config class (seeded, no model hub), the
wrappers that give every family the same inputs and one output, and the names of the models the
exporter makes (family x exporter x attention implementation, the long-context models and the
encoder-decoders)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import transformers

MAX_FILE_BYTES = 2 * 1024 * 1024
VECTOR_NOISE = 0.1  # std of the noise added to biases and LayerNorm parameters

TEST_BATCH, TEST_SEQ = 2, 16  # also the example inputs every export traces
SECOND_BATCH, SECOND_SEQ = 3, 9
VOCAB_SIZE = 256
LONG_VOCAB_SIZE = 128
LONG_TEST_SHAPE = (1, 64)  # (batch, sequence) in the manifest for the long models
LONG_CHECK_SHAPE = (1, 1024)  # the long models are also verified at this shape
IMAGE_SIZE, PATCH_SIZE, CHANNELS = 32, 8, 3

EXPORTERS = ("ts", "dynamo")
ATTN_IMPLEMENTATIONS = ("eager", "sdpa")
EXPORTER_NAMES = {"ts": "torchscript", "dynamo": "dynamo"}


@dataclass(frozen=True)
class FamilySpec:
    """How to build one model family and describe its inputs."""

    name: str
    seed: int
    build: Callable[[str], torch.nn.Module]  # attn_implementation -> backbone module
    is_vision: bool
    vocab_size: int
    hidden_size: int
    num_heads: int
    num_layers: int
    max_positions: int  # largest sequence length the position embeddings allow
    image_size: int = IMAGE_SIZE  # vision models: square input images of this size
    test_shape: tuple[int, int] = (TEST_BATCH, TEST_SEQ)  # manifest inputs: (batch, sequence)
    long_shape: tuple[int, int] | None = None  # text models: also verified at this shape
    max_file_bytes: int = MAX_FILE_BYTES  # the exported file may not be larger
    # Encoder-decoder: a third input, decoder_input_ids, of half the sequence; every layer pair
    # has three attentions (encoder self, decoder causal self, decoder cross).
    seq2seq: bool = False

    @property
    def attention_layers(self) -> int:
        return 3 * self.num_layers if self.seq2seq else self.num_layers


class TextWrapper(torch.nn.Module):
    """Calls a transformers text backbone with keywords and returns its last hidden state."""

    def __init__(self, model: torch.nn.Module, accepts_use_cache: bool) -> None:
        super().__init__()
        self.model = model
        self.accepts_use_cache = accepts_use_cache

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.accepts_use_cache:
            kwargs["use_cache"] = False
        return self.model(**kwargs, return_dict=False)[0]


class Seq2SeqWrapper(torch.nn.Module):
    """Calls a transformers encoder-decoder backbone (T5Model, BartModel) with the encoder's
    tokens and mask and the decoder's tokens; returns the decoder's last hidden state."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        decoder_input_ids: torch.Tensor,
    ) -> torch.Tensor:
        return self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            use_cache=False,
            return_dict=False,
        )[0]


class VisionWrapper(torch.nn.Module):
    """Calls a transformers vision backbone with keywords and returns its last hidden state."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values, return_dict=False)[0]


# --------------------------------------------------------------------------------------------
# Model families
# --------------------------------------------------------------------------------------------


def build_bert(attn: str) -> torch.nn.Module:
    """Tiny BERT: hidden 64, 2 layers, 4 heads."""
    config = transformers.BertConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
        attn_implementation=attn,
    )
    return TextWrapper(transformers.BertModel(config, add_pooling_layer=False), True)


def build_roberta(attn: str) -> torch.nn.Module:
    """Tiny RoBERTa: hidden 48, 3 layers, 3 heads (positions start at pad_token_id + 1)."""
    config = transformers.RobertaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=3,
        intermediate_size=192,
        max_position_embeddings=130,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        attn_implementation=attn,
    )
    return TextWrapper(transformers.RobertaModel(config, add_pooling_layer=False), True)


def build_distilbert(attn: str) -> torch.nn.Module:
    """Tiny DistilBERT: dim 64, 2 layers, 2 heads."""
    config = transformers.DistilBertConfig(
        vocab_size=VOCAB_SIZE,
        dim=64,
        n_layers=2,
        n_heads=2,
        hidden_dim=192,
        max_position_embeddings=128,
        attn_implementation=attn,
    )
    return TextWrapper(transformers.DistilBertModel(config), False)


def build_vit(attn: str) -> torch.nn.Module:
    """Tiny ViT: 32x32x3 images, 8x8 patches (16 patches + CLS), hidden 64, 2 layers, 4 heads."""
    config = transformers.ViTConfig(
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        num_channels=CHANNELS,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        attn_implementation=attn,
    )
    return VisionWrapper(transformers.ViTModel(config, add_pooling_layer=False))


def build_gpt2(attn: str) -> torch.nn.Module:
    """Tiny GPT-2 (base GPT2Model): n_embd 64, 2 layers, 4 heads, causal."""
    config = transformers.GPT2Config(
        vocab_size=VOCAB_SIZE,
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_inner=256,
        n_positions=128,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation=attn,
    )
    return TextWrapper(transformers.GPT2Model(config), True)


def build_t5(attn: str) -> torch.nn.Module:
    """Tiny T5 (encoder-decoder, relative position bias, RMS norm): d_model 32, 2 + 2 layers,
    4 heads of 8."""
    config = transformers.T5Config(
        vocab_size=VOCAB_SIZE, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
        num_heads=4, attn_implementation=attn,
    )  # fmt: skip
    return Seq2SeqWrapper(transformers.T5Model(config))


def build_bart(attn: str) -> torch.nn.Module:
    """Tiny BART (encoder-decoder, learned positions): d_model 32, 2 + 2 layers, 4 heads."""
    config = transformers.BartConfig(
        vocab_size=VOCAB_SIZE, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
        decoder_ffn_dim=64, max_position_embeddings=128, attn_implementation=attn,
    )  # fmt: skip
    return Seq2SeqWrapper(transformers.BartModel(config))


T5 = FamilySpec("t5", 8, build_t5, False, VOCAB_SIZE, 32, 4, 2, 128, seq2seq=True)
BART = FamilySpec("bart", 9, build_bart, False, VOCAB_SIZE, 32, 4, 2, 128, seq2seq=True)

# Encoder-decoder models: name -> (family spec, exporter, attention implementation). T5 exports
# with the dynamo exporter only with eager attention, unpatched (torch 2.13.0, transformers
# 5.24.0). With sdpa, torch 2.13 fails in its decomposition step ("Failed to decompose the FX graph
# for ONNX compatibility"; ValueError: Cannot view a tensor with shape [2, 16, 4, 8] and strides
# (512, 8, 128, 1) as a tensor with shape (2, 16, 32)): T5Attention's
# `attn_output.reshape(*input_shape, -1)` after sdpa's transpose(1, 2) was captured as aten.view,
# and the decomposed SDPA returns the transposed, non-contiguous layout.
SEQ2SEQ_MODELS: dict[str, tuple[FamilySpec, str, str]] = {
    "t5_ts_eager": (T5, "ts", "eager"),
    "t5_dynamo_eager": (T5, "dynamo", "eager"),
    "bart_ts_eager": (BART, "ts", "eager"),
    "bart_dynamo_eager": (BART, "dynamo", "eager"),
}


FAMILIES: dict[str, FamilySpec] = {
    spec.name: spec
    for spec in (
        FamilySpec("bert", 1, build_bert, False, VOCAB_SIZE, 64, 4, 2, 128),
        FamilySpec("roberta", 2, build_roberta, False, VOCAB_SIZE, 48, 3, 3, 128),
        FamilySpec("distilbert", 3, build_distilbert, False, VOCAB_SIZE, 64, 2, 2, 128),
        FamilySpec("vit", 4, build_vit, True, 0, 64, 4, 2, 0),
        FamilySpec("gpt2", 5, build_gpt2, False, VOCAB_SIZE, 64, 4, 2, 128),
    )
}


def build_bert_base(attn: str) -> torch.nn.Module:
    """BERT-base shape (the BertConfig defaults): hidden 768, 12 layers, 12 heads, vocab 30522."""
    config = transformers.BertConfig(attn_implementation=attn)
    return TextWrapper(transformers.BertModel(config, add_pooling_layer=False), True)


BERT_BASE = FamilySpec("bert", 0, build_bert_base, False, 30522, 768, 12, 12, 512)


def build_gpt2_small(attn: str) -> torch.nn.Module:
    """GPT-2-small shape (the GPT2Config defaults): n_embd 768, 12 layers, 12 heads, vocab 50257."""
    config = transformers.GPT2Config(attn_implementation=attn)
    return TextWrapper(transformers.GPT2Model(config), True)


def build_vit_base(attn: str) -> torch.nn.Module:
    """ViT-base shape (the ViTConfig defaults): 224x224 images, 16x16 patches, hidden 768, 12
    layers, 12 heads."""
    config = transformers.ViTConfig(attn_implementation=attn)
    return VisionWrapper(transformers.ViTModel(config, add_pooling_layer=False))


GPT2_SMALL = FamilySpec("gpt2", 0, build_gpt2_small, False, 50257, 768, 12, 12, 1024)
VIT_BASE = FamilySpec("vit", 0, build_vit_base, True, 0, 768, 12, 12, 0, image_size=224)


def build_bert_long(attn: str) -> torch.nn.Module:
    """Long-context BERT: 4096 positions, hidden 256, 2 layers, 4 heads (head dim 64), FFN 256."""
    config = transformers.BertConfig(
        vocab_size=LONG_VOCAB_SIZE,
        hidden_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=4096,
        attn_implementation=attn,
    )
    return TextWrapper(transformers.BertModel(config, add_pooling_layer=False), True)


def build_gpt2_long(attn: str) -> torch.nn.Module:
    """Long-context GPT-2 (GPT2Model): 2048 positions, n_embd 128, 2 layers, 2 heads (head dim
    64), n_inner 256, causal."""
    config = transformers.GPT2Config(
        vocab_size=LONG_VOCAB_SIZE,
        n_embd=128,
        n_layer=2,
        n_head=2,
        n_inner=256,
        n_positions=2048,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation=attn,
    )
    return TextWrapper(transformers.GPT2Model(config), True)


MIB = 1024 * 1024
BERT_LONG = FamilySpec(
    "bert", 6, build_bert_long, False, LONG_VOCAB_SIZE, 256, 4, 2, 4096,
    test_shape=LONG_TEST_SHAPE, long_shape=LONG_CHECK_SHAPE, max_file_bytes=9 * MIB,
)  # fmt: skip
GPT2_LONG = FamilySpec(
    "gpt2", 7, build_gpt2_long, False, LONG_VOCAB_SIZE, 128, 2, 2, 2048,
    test_shape=LONG_TEST_SHAPE, long_shape=LONG_CHECK_SHAPE, max_file_bytes=3 * MIB,
)  # fmt: skip

# Long-context models: name -> (family spec, the one exporter, the one attention implementation).
LONG_MODELS: dict[str, tuple[FamilySpec, str, str]] = {
    "bert_long": (BERT_LONG, "dynamo", "eager"),
    "gpt2_long": (GPT2_LONG, "ts", "eager"),
}


def all_model_names() -> list[str]:
    """Every model name in canonical order: family, then exporter, then attention; then the
    long-context models."""
    grid = [
        f"{family}_{exporter}_{attn}"
        for family in FAMILIES
        for exporter in EXPORTERS
        for attn in ATTN_IMPLEMENTATIONS
    ]
    return grid + list(LONG_MODELS) + list(SEQ2SEQ_MODELS)


def parse_model_name(name: str) -> tuple[FamilySpec, str, str]:
    """Split ``bert_ts_eager`` into its family spec, exporter key and attention implementation
    (a long-context model, ``bert_long``, names all three by itself)."""
    if name in LONG_MODELS:
        return LONG_MODELS[name]
    if name in SEQ2SEQ_MODELS:
        return SEQ2SEQ_MODELS[name]
    family, exporter, attn = name.split("_")
    return FAMILIES[family], exporter, attn


def build_model(spec: FamilySpec, attn: str) -> torch.nn.Module:
    """Build a family's wrapper with seeded random weights, in eval mode.

    transformers initialises every bias to 0 and every LayerNorm to (1, 0); the vectors are
    perturbed so that bias and LayerNorm handling is actually exercised (and so the TorchScript
    exporter does not deduplicate the identical initializers into Identity aliases).
    """
    torch.manual_seed(spec.seed)
    model = spec.build(attn).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 1:
                parameter.add_(VECTOR_NOISE * torch.randn_like(parameter))
    return model
