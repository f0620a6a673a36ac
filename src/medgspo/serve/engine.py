"""The loaded model of ``medgspo chat`` and ``medgspo serve``: prompts, token ids, and one chat at a time.

    engine = ChatEngine.load("tiny", "runs/sft/adapter")          # model + tokenizer + the adapter's chat format
    result = engine.generate(engine.question_messages("……"), SamplingOptions(), on_text=print)

:meth:`ChatEngine.generate` (``medgspo chat``) streams decoded text to ``on_text`` as soon as it is final and stops
early when ``should_stop`` says so; it returns a :class:`GenerationResult`. ``medgspo serve`` batches many chats
instead (:mod:`medgspo.serve.batcher`), using :meth:`ChatEngine.encode`, :meth:`ChatEngine.decode` and
:meth:`ChatEngine.eos_token_ids`. torch and transformers are imported inside the methods, so importing this module
is cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgspo.data.chat_format import ChatFormat
from medgspo.errors import ModelLoadError
from medgspo.modeling.generation import SamplingOptions
from medgspo.modeling.loading import check_model_arguments, load_for_inference
from medgspo.serve.streaming import prompt_opens_thinking

logger = logging.getLogger(__name__)


@dataclass
class GenerationResult:
    """One finished completion: raw text, token counts and why it stopped (``stop``, ``length``; the server's
    batcher also ``cancelled``)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    opens_thinking: bool = True
    token_ids: list[int] = field(default_factory=list, repr=False)  # the completion's tokens (end token included)
    logprobs: list[Any] | None = field(default=None, repr=False)  # a TokenLogprob per token, when asked for
    prompt_logprobs: list[Any] | None = field(default=None, repr=False)  # per prompt token (the first is None)


class ChatEngine:
    """A loaded model that answers chats one at a time (not thread-safe: callers serialize :meth:`generate`)."""

    def __init__(self, model: Any, tokenizer: Any, chat_format: ChatFormat) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.chat_format = chat_format
        self._described: dict[int, tuple[str, list[int]]] = {}

    @classmethod
    def load(cls, model: str | None, adapter: str | Path | None = None) -> ChatEngine:
        """Load base model (``tiny``, a folder or a Hub id) plus optional LoRA adapter; errors name what is wrong."""
        check_model_arguments(model, adapter)
        try:
            return cls(*load_for_inference(model, adapter))
        except (OSError, ValueError, RuntimeError) as exc:  # missing files, or an adapter made for another model
            what = f"{model!r} with adapter {str(adapter)!r}" if adapter else repr(model)
            raise ModelLoadError(f"cannot load {what}: {first_line(exc)}") from exc

    def render(self, messages: list[dict[str, str]], template_kwargs: dict[str, Any] | None = None) -> str:
        """The generation prompt for a chat (the chat format's system prompt goes first unless one is given);
        ``template_kwargs`` (a request's ``chat_template_kwargs``, e.g. ``enable_thinking``) override the format's."""
        if self.chat_format.system_prompt and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.chat_format.system_prompt}, *messages]
        kwargs = {**self.chat_format.chat_template_kwargs(), **(template_kwargs or {})}
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)

    def encode(
        self, messages: list[dict[str, str]], template_kwargs: dict[str, Any] | None = None
    ) -> tuple[list[int], bool]:
        """The prompt's token ids, and whether it leaves the model inside the thinking block."""
        prompt = self.render(messages, template_kwargs)
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return list(ids), prompt_opens_thinking(prompt)

    def decode(self, ids: list[int]) -> str:
        """Text of generated token ids (special tokens left out, as in :meth:`generate`)."""
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def encode_text(self, text: str) -> list[int]:
        """Token ids of raw text (``/v1/completions``: no chat template; special tokens as the tokenizer adds them)."""
        return list(self.tokenizer(text)["input_ids"])

    def describe_token(self, token_id: int) -> tuple[str, list[int]]:
        """A token's text and its UTF-8 bytes, for logprobs (the bytes of a token that holds part of a character
        are its own, not those of U+FFFD)."""
        cached = self._described.get(token_id)
        if cached is None:
            text = self.tokenizer.decode([token_id])
            cached = self._described[token_id] = (text, list(token_bytes(self.tokenizer, token_id, text)))
        return cached

    def eos_token_ids(self) -> set[int]:
        """The token ids that end a completion (the generation config's, else the tokenizer's)."""
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return set(eos) if isinstance(eos, list | tuple) else {eos}

    def question_messages(self, question: str) -> list[dict[str, str]]:
        """The messages for one standalone question."""
        return self.chat_format.messages(question)

    def generate(
        self,
        messages: list[dict[str, str]],
        options: SamplingOptions,
        on_text: Callable[[str], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> GenerationResult:
        """Generate one completion; ``on_text`` gets each decoded piece as soon as it is final.

        ``should_stop`` is polled after every token (a client that went away stops the generation early).
        """
        import torch

        prompt = self.render(messages)
        enc = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(self.model.device)
        kwargs = options.generate_kwargs()
        if on_text is not None:
            kwargs["streamer"] = callback_streamer(self.tokenizer, on_text)
        if should_stop is not None:
            kwargs["stopping_criteria"] = stopping_criteria(should_stop)
        if options.seed is not None:
            torch.manual_seed(options.seed)
        with torch.no_grad():
            out = self.model.generate(**enc, **kwargs, pad_token_id=self.tokenizer.pad_token_id)
        new_ids = out[0, enc["input_ids"].shape[1] :].tolist()
        return GenerationResult(
            text=self.tokenizer.decode(new_ids, skip_special_tokens=True),
            prompt_tokens=int(enc["input_ids"].shape[1]),
            completion_tokens=len(new_ids),
            finish_reason=self._finish_reason(new_ids, options.max_new_tokens),
            opens_thinking=prompt_opens_thinking(prompt),
            token_ids=new_ids,
        )

    def _finish_reason(self, new_ids: list[int], max_new_tokens: int) -> str:
        if len(new_ids) >= max_new_tokens and (not new_ids or new_ids[-1] not in self.eos_token_ids()):
            return "length"
        return "stop"


def callback_streamer(tokenizer: Any, on_text: Callable[[str], None]) -> Any:
    """A transformers ``TextStreamer`` that hands decoded text to ``on_text`` instead of printing it."""
    from transformers import TextStreamer

    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)

    def on_finalized_text(text: str, stream_end: bool = False) -> None:
        if text:
            on_text(text)

    streamer.on_finalized_text = on_finalized_text
    return streamer


def stopping_criteria(should_stop: Callable[[], bool]) -> Any:
    """A ``StoppingCriteriaList`` that ends generation once ``should_stop()`` is true (checked after every token)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _StopWhen(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), should_stop(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_StopWhen()])


def token_bytes(tokenizer: Any, token_id: int, text: str) -> bytes:
    """The bytes a byte-level BPE token stands for (GPT-2's byte-to-character table, which Qwen's tokenizers use);
    ``text`` encoded as UTF-8 for a token outside that table (special and added tokens)."""
    piece = tokenizer.convert_ids_to_tokens(token_id)
    table = _byte_decoder()
    if isinstance(piece, str) and piece and all(c in table for c in piece):
        return bytes(table[c] for c in piece)
    return text.encode("utf-8", errors="replace")


def _byte_decoder() -> dict[str, int]:
    """GPT-2's reversible byte-to-character table, inverted: the printable character that stands for each byte."""
    if not _BYTE_DECODER:
        printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
        shifted = [b for b in range(256) if b not in printable]
        _BYTE_DECODER.update({chr(b): b for b in printable})
        _BYTE_DECODER.update({chr(256 + i): b for i, b in enumerate(shifted)})
    return _BYTE_DECODER


_BYTE_DECODER: dict[str, int] = {}


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty).

    >>> first_line(OSError("no such file\\nmore detail"))
    'no such file'
    >>> first_line(RuntimeError())
    'RuntimeError'
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
