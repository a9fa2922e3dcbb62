"""Calibration samples for `ctac calibrate`: an npz of model inputs, or text read with the model's
own tokenizer.

Text: every paragraph (blank-line separated; a file without blank lines is one paragraph) is
tokenized by a HuggingFace `tokenizer.json` (`tokenizers`, no download) with its post-processor,
so the special tokens ([CLS] ... [SEP]) are the ones the model was trained with, then truncated
or padded to the --shape sequence length. Inputs are filled by name (input_ids, attention_mask:
1 for real tokens, 0 for padding; token_type_ids: zeros). A batch of B rows takes B paragraphs;
the last batch is completed with the first paragraphs again, so every batch is real text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from ctac.calibrate import load_samples
from ctac.errors import CtacError

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
MIN_TOKENS = 8  # a shorter paragraph (a heading, a stray line) says little about real inputs
DEFAULT_TEXT_SAMPLES = 16
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")


def load_calibration_data(
    module: ModuleOp,
    paths: Sequence[str | Path],
    tokenizer: str | Path | None = None,
    max_samples: int | None = None,
) -> list[dict]:
    """The samples of --data: one .npz, or text files / directories of *.txt (needs a
    tokenizer). `max_samples` caps the samples of an npz and the paragraphs of text (default
    16)."""
    from ctac.runtime.evaluator import input_signature

    if max_samples is not None and max_samples < 1:
        raise CtacError(f"--max-samples must be at least 1, got {max_samples}")
    paths = [Path(p) for p in paths]
    archives = [p for p in paths if p.suffix == ".npz"]
    if archives:
        if len(paths) > 1:
            raise CtacError("--data takes one .npz, or text files; not several or a mix")
        shapes = {name: shape for name, (shape, _) in input_signature(module).items()}
        return load_samples(archives[0], shapes)[:max_samples]
    if tokenizer is None:
        raise CtacError(
            "text calibration data needs --tokenizer tokenizer.json (the model's HuggingFace "
            "tokenizer file)"
        )
    text_shape(module)  # the model's inputs first: no point reading text it cannot take
    return text_samples(
        module,
        read_paragraphs(paths),
        load_tokenizer(tokenizer),
        max_samples or DEFAULT_TEXT_SAMPLES,
    )


def read_paragraphs(paths: Sequence[str | Path]) -> list[str]:
    """The paragraphs of text files, and of the *.txt files of directories (sorted)."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(path.glob("*.txt"))
            if not found:
                raise CtacError(f"no *.txt files in the calibration data directory '{path}'")
            files += found
        else:
            files.append(path)
    paragraphs = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise CtacError(f"cannot read calibration text '{file}': {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise CtacError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        text = text.replace("\r\n", "\n")
        paragraphs += [p.strip() for p in _BLANK_LINE.split(text) if p.strip()]
    return paragraphs


def load_tokenizer(path: str | Path):
    """A `tokenizers.Tokenizer` from a tokenizer.json file."""
    from tokenizers import Tokenizer

    if not Path(path).is_file():
        raise CtacError(f"cannot read tokenizer '{path}': no such file")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises bare Exception for every parse failure
        raise CtacError(
            f"cannot read tokenizer '{path}': {exc} (expected a HuggingFace tokenizer.json)"
        ) from None


def pad_id(tokenizer) -> int:
    """The tokenizer's own padding id, else its [PAD] token's, else 0."""
    if tokenizer.padding is not None:
        return int(tokenizer.padding["pad_id"])
    token = tokenizer.token_to_id("[PAD]")
    return int(token) if token is not None else 0


def min_tokens(tokenizer, length: int) -> int:
    """Real (non-special) tokens a paragraph needs: MIN_TOKENS, or what a row of `length` holds."""
    return max(1, min(MIN_TOKENS, length - tokenizer.num_special_tokens_to_add(False)))


def tokenize(tokenizer, paragraphs: Sequence[str], length: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, attention mask), each [paragraphs kept, length]: special tokens added, truncated or
    padded to `length`; paragraphs with fewer than MIN_TOKENS (or what fits) real tokens are
    skipped. Sets the tokenizer's own padding and truncation for this."""
    pad = pad_id(tokenizer)
    tokenizer.no_padding()  # padding is done here, to exactly `length`, with a matching mask
    if length > tokenizer.num_special_tokens_to_add(False):
        # The tokenizer's truncation keeps the post-processor's closing tokens ([SEP]).
        tokenizer.enable_truncation(max_length=length)
    least = min_tokens(tokenizer, length)
    rows, masks = [], []
    for paragraph in paragraphs:
        try:
            encoding = tokenizer.encode(paragraph)
        except Exception as exc:  # a tokenizer with a broken pipeline (bare Exception)
            raise CtacError(f"the tokenizer failed on calibration text: {exc}") from None
        ids = list(encoding.ids)[:length]  # also when `length` cannot hold the special tokens
        real = len(ids) - sum(encoding.special_tokens_mask[: len(ids)])
        if real < least:
            continue
        rows.append(ids + [pad] * (length - len(ids)))
        masks.append([1] * len(ids) + [0] * (length - len(ids)))
    return np.array(rows, np.int64).reshape(-1, length), np.array(masks, np.int64).reshape(
        -1, length
    )


def text_shape(module: ModuleOp) -> tuple[int, int]:
    """(batch, sequence) of a model text can fill: input_ids, and only inputs named as in
    TEXT_INPUTS, all of one [batch, sequence] shape; else a CtacError naming the problem."""
    from ctac.runtime.evaluator import input_signature

    signature = input_signature(module)
    if "input_ids" not in signature:
        raise CtacError(
            f"text calibration data needs a model with an input_ids input; this one takes "
            f"{list(signature)} (give an npz of its inputs instead)"
        )
    unknown = [name for name in signature if name not in TEXT_INPUTS]
    if unknown:
        raise CtacError(
            f"text calibration data cannot fill input(s) {unknown}: it fills only "
            f"{', '.join(TEXT_INPUTS)} (give an npz of the model's inputs instead)"
        )
    shape = signature["input_ids"][0]
    for name, (other, _) in signature.items():
        if len(other) != 2 or other != shape:
            raise CtacError(
                f"text calibration data needs [batch, sequence] inputs of one shape; "
                f"'{name}' is {list(other)}, input_ids {list(shape)}"
            )
    return shape[0], shape[1]


def text_samples(
    module: ModuleOp, paragraphs: Sequence[str], tokenizer, max_samples: int
) -> list[dict]:
    """Samples for the model's text inputs from `paragraphs` (at most `max_samples` of them)."""
    from ctac.runtime.evaluator import indexed_extent, input_signature, main_function

    batch, length = text_shape(module)
    signature = input_signature(module)
    ids, mask = tokenize(tokenizer, paragraphs, length)
    if not len(ids):
        raise CtacError(
            f"no usable paragraph in the calibration text ({len(paragraphs)} read; each needs "
            f"at least {min_tokens(tokenizer, length)} tokens)"
        )
    ids, mask = ids[:max_samples], mask[:max_samples]
    argument = main_function(module).body.block.args[list(signature).index("input_ids")]
    vocabulary = indexed_extent(argument)
    if vocabulary is not None and int(ids.max()) >= vocabulary:
        raise CtacError(
            f"the tokenizer gives token id {int(ids.max())}, beyond the model's vocabulary of "
            f"{vocabulary}: is the tokenizer the model's own?"
        )
    # Complete the last batch with the first paragraphs again (batches of real text only).
    rows = -(-len(ids) // batch) * batch
    order = np.arange(rows) % len(ids)
    columns = {"input_ids": ids[order], "attention_mask": mask[order],
               "token_type_ids": np.zeros_like(ids[order])}  # fmt: skip
    return [
        {
            name: columns[name][start : start + batch].astype(dtype)
            for name, (_, dtype) in signature.items()
        }
        for start in range(0, rows, batch)
    ]
