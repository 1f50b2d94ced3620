"""A small byte-level BPE tokenizer for the tiny CLIP text encoder, trained locally with the ``tokenizers`` library.

``CLIPTokenizer`` cannot be built from a plain ``tokenizers`` BPE (it expects CLIP's word-end vocabulary), so the
tokenizer is a ``transformers.PreTrainedTokenizerFast`` around the trained ``tokenizers.Tokenizer``: lower-cased,
byte-level (any user text encodes, nothing is unknown), ``<|startoftext|> ... <|endoftext|>`` added by a
``TemplateProcessing`` post-processor, padded with ``<|pad|>``, 77 tokens at most like CLIP. Stable Diffusion
pipelines call it exactly as they call a ``CLIPTokenizer``; ``save_pretrained``/``from_pretrained`` round-trip it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from synthgen.errors import ConfigError

BOS, EOS, PAD = "<|startoftext|>", "<|endoftext|>", "<|pad|>"
SPECIAL_TOKENS = (BOS, EOS, PAD)
MODEL_MAX_LENGTH = 77


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512, min_frequency: int = 1) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` (sorted and de-duplicated first, so the order of ``texts`` is moot)."""
    corpus = sorted({t.strip() for t in texts if t and t.strip()})
    if not corpus:
        raise ConfigError("tokenizer: no training text (give at least one non-empty prompt)")
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(SPECIAL_TOKENS):
        raise ConfigError(
            f"tokenizer vocab_size {vocab_size} is below the byte alphabet + special tokens "
            f"({len(alphabet) + len(SPECIAL_TOKENS)}); use at least that"
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    bos, eos = tokenizer.token_to_id(BOS), tokenizer.token_to_id(EOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} $B {EOS}", special_tokens=[(BOS, bos), (EOS, eos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, model_max_length=MODEL_MAX_LENGTH, bos_token=BOS, eos_token=EOS, pad_token=PAD
    )


def load_tokenizer(path: str | Path, subfolder: str | None = None):
    """A tokenizer saved by ``save_pretrained`` (ours or a base model's ``CLIPTokenizer``), via AutoTokenizer."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), subfolder=subfolder or "")
    except (OSError, ValueError) as exc:
        where = f"{path}/{subfolder}" if subfolder else str(path)
        raise ConfigError(f"{where}: cannot load a tokenizer ({str(exc).strip().splitlines()[0][:200]})") from None
