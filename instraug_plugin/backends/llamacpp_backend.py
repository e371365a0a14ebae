"""llama.cpp rewriter (llama-cpp-python's C API): a GGUF file on the CPU, many sequences per batch.

The embedded SmolLM2 ships as a GGUF file, llama.cpp's own format, so this backend reads it as is
(no conversion). One `llama_decode` call advances every unfinished sequence of a batch by a token
(continuous batching in one context with a unified KV cache); the prompt prefix the batch's rows
share (the meta-prompt) is prefilled once for all of them. Each request has its own sampler chain
seeded from its cache key, and placeholder safety holds by construction: the request's
`core.constraint.PlaceholderConstraint` becomes a llama.cpp grammar (GBNF), which masks every token
that would break it and allows end-of-generation only once every owed sentinel is out. The grammar
is applied as llama.cpp's own samplers apply it (`common_sampler`): a token is drawn without it and
checked against it, and only a rejected draw is redrawn with the grammar masking the whole
vocabulary (checking one token is ~1000x cheaper than masking 49k, and most draws pass). As in the
transformers decoder, when a row's remaining budget only just fits the sentinels it still owes, the
next one is forced (its tokens are fed to the grammar and the model as if sampled), so a reply the
budget cuts off still holds every placeholder.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from instraug_plugin.backends.base import GenerationRequest
from instraug_plugin.backends.embedded import DEFAULT_MODEL, EMBEDDED, embedded_model
from instraug_plugin.core.constraint import FREE, ConstraintState, PlaceholderConstraint
from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.replies import LENGTH, STOP, Reply

try:
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
except ImportError:
    raise InstrAugError("the llamacpp backend needs llama-cpp-python: pip install 'instraug-plugin[llamacpp]'") from None

logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # llama.cpp's load and timing chatter
GGML_LOG_LEVEL_ERROR = 3
# Logged at error level while loading, harmless: Qwen2.5's GGUF marks `</s>` as a normal token.
_HARMLESS = (b"was not control-type; this is probably a bug in the model",)


@llama_cpp.llama_log_callback
def _log_errors(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """llama.cpp's log: errors to stderr, except the known harmless ones; everything else dropped."""
    if level == GGML_LOG_LEVEL_ERROR and not any(marker in text for marker in _HARMLESS):
        sys.stderr.write(text.decode("utf-8", errors="replace"))


llama_cpp.llama_log_set(_log_errors, ctypes.c_void_p(0))

ENGINE = "llama.cpp"
SEED_BITS = 32  # llama.cpp's dist sampler takes a 32-bit seed
PIECE_BYTES = 256


def available_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def model_params(extra_buffer_types: bool = False):
    """llama.cpp model load parameters: llama.cpp's extra buffer types off unless asked for.

    On a CPU with AMX tiles, llama.cpp (0.3.36) puts Q4/Q8 weights into its AMX buffer type and then
    crashes in the AMX matrix multiply (segmentation fault; upstream llama.cpp issue 20824). Elsewhere
    they hold weights repacked for the AVX2/AVX-512 kernels, which bought nothing here: off was 1.10x
    as fast for Qwen2.5-Coder-1.5B Q4_K_M and 0.985x [0.90-1.01] for SmolLM2 Q4_1
    (`benchmarks/llamacpp_extra_bufts.py`, 2 cores, AVX2), so they are off on every CPU.
    """
    params = llama_cpp.llama_model_default_params()
    params.use_extra_bufts = extra_buffer_types
    return params


def _common_prefix(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix all `sequences` share."""
    shortest = min(map(len, sequences))
    for position in range(shortest):
        token = sequences[0][position]
        if any(tokens[position] != token for tokens in sequences):
            return position
    return shortest


@dataclass
class _Row:
    """A sequence being decoded: its constraint and where it stands, its budget, tokens forced next."""

    constraint: PlaceholderConstraint | None
    budget: int
    text: str = ""
    used: int = 0
    forced: list[int] = field(default_factory=list)
    state: ConstraintState | None = None

    def __post_init__(self) -> None:
        if self.constraint is not None:
            self.state = self.constraint.start()

    def must_place_sentinel(self, cost: Callable[[str], int]) -> bool:
        """Whether the budget left only just fits the sentinels still owed (in free text)."""
        if self.state is None or self.state.phase != FREE or not self.state.owed:
            return False
        return self.budget - self.used <= sum(cost(s) for s in self.state.owed)

    def take(self, piece: str) -> None:
        """Record a token (its text) the row emitted; the grammar has already allowed it."""
        self.text += piece
        self.used += 1
        if self.constraint is not None and self.state is not None:
            self.state = self.constraint.advance(self.state, piece)


def _chain(*samplers):
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    for sampler in samplers:
        llama_cpp.llama_sampler_chain_add(chain, sampler)
    return chain


class _Samplers:
    """One request's samplers: temperature, top-p and its own seed; with a constraint, its grammar
    twice (a checker, and a redraw chain that masks the vocabulary first), kept in step."""

    def __init__(self, vocab, request: GenerationRequest, seed: int):
        def draw(seed: int) -> list:
            if request.temperature <= 0:
                return [llama_cpp.llama_sampler_init_greedy()]
            return [llama_cpp.llama_sampler_init_temp(request.temperature),
                    llama_cpp.llama_sampler_init_top_p(request.top_p, 1), llama_cpp.llama_sampler_init_dist(seed)]

        self.free_draw = _chain(*draw(seed))
        self.checker = self.redraw = None
        if (constraint := request.constraint) is not None:
            grammar = constraint.to_gbnf().encode()
            self.checker = llama_cpp.llama_sampler_init_grammar(vocab, grammar, b"root")
            masked = llama_cpp.llama_sampler_init_grammar(vocab, grammar, b"root")
            if not self.checker or not masked:
                self.free()
                raise InstrAugError(f"llama.cpp rejected the grammar for sentinels {', '.join(constraint.sentinels)}")
            self.redraw = _chain(masked, *draw((seed + 1) % 2**SEED_BITS))
        self._one = llama_cpp.llama_token_data()
        self._candidates = llama_cpp.llama_token_data_array(
            data=ctypes.pointer(self._one), size=1, selected=-1, sorted=False)

    def sample(self, ctx, index: int) -> int:
        """A token from output `index`: a free draw if the grammar allows it, else a masked redraw."""
        token = llama_cpp.llama_sampler_sample(self.free_draw, ctx, index)
        if self.checker is None:
            return token
        if not self._allows(token):
            token = llama_cpp.llama_sampler_sample(self.redraw, ctx, index)  # accepted by the redraw chain
            llama_cpp.llama_sampler_accept(self.checker, token)
            return token
        self.accept(token)
        return token

    def accept(self, token: int) -> None:
        """Advance the grammars past `token` (one the grammar allows)."""
        if self.checker is not None:
            llama_cpp.llama_sampler_accept(self.checker, token)
            llama_cpp.llama_sampler_accept(self.redraw, token)

    def _allows(self, token: int) -> bool:
        self._one.id, self._one.logit, self._one.p = token, 0.0, 0.0
        self._candidates.size, self._candidates.selected = 1, -1
        llama_cpp.llama_sampler_apply(self.checker, ctypes.byref(self._candidates))
        return self._one.logit != -math.inf

    def free(self) -> None:
        for sampler in (self.free_draw, self.checker, self.redraw):
            if sampler:
                llama_cpp.llama_sampler_free(sampler)


class LlamaCppBackend:
    """A GGUF model run by llama.cpp on the CPU (`model`: a .gguf file, or `smollm2`).

    `batch_size` sequences decode together (the context's parallel sequences); `context_size` is the
    KV cache shared by a batch (prompt prefix once, then each row's own tokens); a batch that does not
    fit is decoded in parts. `threads` defaults to the cores this process may use. `extra_buffer_types`
    turns llama.cpp's extra buffer types on (off by default: `model_params`).
    """

    name = "llamacpp"
    supports_constraints = True

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        device: str | None = None,
        batch_size: int = 32,
        threads: int | None = None,
        context_size: int = 8192,
        extra_buffer_types: bool = False,
    ):
        if device not in (None, "cpu"):
            raise InstrAugError(f"the llamacpp backend runs on the CPU; got --device {device}")
        if batch_size < 1 or context_size < 64 or (threads is not None and threads < 1):
            raise InstrAugError("llamacpp: batch size and threads must be >= 1 and the context size >= 64")
        embedded = embedded_model(model)
        path = embedded.gguf_path() if embedded is not None else Path(model)
        if not path.is_file() or path.suffix != ".gguf":
            raise InstrAugError(f"the llamacpp backend needs a .gguf file or an embedded model ({', '.join(EMBEDDED)}); got {model}")
        self.model_id = (embedded.model_id if embedded is not None else model) + f"@{ENGINE}"
        self.batch_size = batch_size
        self.threads = threads or available_cores()
        llama_cpp.llama_backend_init()
        self._model = llama_cpp.llama_model_load_from_file(str(path).encode(), model_params(extra_buffer_types))
        if not self._model:
            raise InstrAugError(f"llama.cpp cannot load rewriter model {path}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = context_size
        params.n_batch = params.n_ubatch = min(context_size, 512)
        params.n_seq_max = min(batch_size, llama_cpp.llama_max_parallel_sequences())
        params.kv_unified = True  # the rows of a batch share their prompt prefix in one cache
        params.n_threads = params.n_threads_batch = self.threads
        params.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not self._ctx:
            llama_cpp.llama_model_free(self._model)
            raise InstrAugError(f"llama.cpp cannot create a {context_size}-token context for {path}")
        self.parallel = params.n_seq_max
        self.context_size = llama_cpp.llama_n_ctx(self._ctx)
        self.max_tokens_per_decode = params.n_batch
        self._batch = llama_cpp.llama_batch_init(self.max_tokens_per_decode, 0, self.parallel)
        template = llama_cpp.llama_model_chat_template(self._model, None)
        if template is None:
            raise InstrAugError(f"{path} has no chat template")
        self._sentinel_cache: dict[tuple[str, bool], tuple[int, ...]] = {}
        self._chat = Jinja2ChatFormatter(
            template.decode(), eos_token=self._piece(llama_cpp.llama_vocab_eos(self._vocab), special=True),
            bos_token=self._piece(llama_cpp.llama_vocab_bos(self._vocab), special=True),
        )

    @property
    def context_length(self) -> int:
        """Tokens one sequence may hold (prompt + reply): the whole context, when alone in its batch."""
        return min(self.context_size, llama_cpp.llama_model_n_ctx_train(self._model))

    def render(self, messages: Sequence[tuple[str, str]]) -> str:
        """The chat prompt text, rendered with the model's own chat template."""
        return self._chat(messages=[{"role": role, "content": content} for role, content in messages]).prompt

    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text`; special tokens in it (`<|im_start|>`) are parsed as such."""
        data = text.encode()
        buffer = (llama_cpp.llama_token * (len(data) + 8))()
        count = llama_cpp.llama_tokenize(self._vocab, data, len(data), buffer, len(buffer), False, True)
        if count < 0:
            raise InstrAugError(f"llama.cpp cannot tokenize a {len(data)}-byte prompt")
        return list(buffer[:count])

    def prompt_tokens(self, messages: Sequence[tuple[str, str]]) -> int:
        """Length in tokens of a chat prompt."""
        return len(self.tokenize(self.render(messages)))

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """One `Reply` per request, in order: `length` when it spent its budget before ending."""
        prompts = [self.tokenize(self.render(r.messages)) for r in requests]
        replies: list[Reply] = []
        for part in self._parts(prompts, [r.max_new_tokens for r in requests]):
            replies += self._generate_together([prompts[i] for i in part], [requests[i] for i in part])
        return replies

    def _parts(self, prompts: list[list[int]], budgets: Sequence[int]) -> list[range]:
        """Consecutive runs of prompts that decode together: at most `parallel` of them, and their
        prompts (shared prefix counted once) and reply budgets fit the context."""
        parts, start = [], 0
        while start < len(prompts):
            end = start + 1
            while end < len(prompts) and end - start < self.parallel and self._cells(prompts[start : end + 1], budgets[start : end + 1]) <= self.context_size:
                end += 1
            if self._cells(prompts[start:end], budgets[start:end]) > self.context_size:
                raise InstrAugError(f"a {len(prompts[start])}-token prompt and its reply exceed llama.cpp's {self.context_size}-token context")
            parts.append(range(start, end))
            start = end
        return parts

    @staticmethod
    def _cells(prompts: Sequence[list[int]], budgets: Sequence[int]) -> int:
        shared = _common_prefix(prompts) if len(prompts) > 1 else 0
        return shared + sum(len(p) - shared + budget for p, budget in zip(prompts, budgets))

    def first_token_logprobs(self, conversations: Sequence[Sequence[tuple[str, str]]],
                             words: Sequence[str]) -> list[list[float]]:
        """For each chat (rendered with the assistant's turn opened), the log-probability that the
        reply starts with each of `words` (its first token). One forward pass per chat, the chats
        decoded side by side and the prompt prefix they share prefilled once."""
        import numpy as np

        prompts = [self.tokenize(self.render(c)) for c in conversations]
        targets = [self.tokenize(word)[0] for word in words]
        n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        scores: list[list[float]] = []
        for part in self._parts(prompts, [0] * len(prompts)):
            rows = [prompts[i] for i in part]
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._ctx), True)
            shared = min(_common_prefix(rows), min(map(len, rows)) - 1)
            everyone = list(range(len(rows)))
            for start in range(0, shared, self.max_tokens_per_decode):
                self._decode([(rows[0][p], p, everyone, False) for p in range(start, min(shared, start + self.max_tokens_per_decode))])
            pending = [(rows[s][p], p, [s], p == len(rows[s]) - 1) for s in everyone for p in range(shared, len(rows[s]))]
            found: dict[int, list[float]] = {}
            while pending:
                step, pending = pending[: self.max_tokens_per_decode], pending[self.max_tokens_per_decode :]
                self._decode(step)
                for index, (_, _, (sequence,), wants_logits) in enumerate(step):
                    if wants_logits:
                        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx, index), shape=(n_vocab,))
                        top = float(logits.max())
                        log_total = top + float(np.log(np.exp(logits - top).sum()))
                        found[sequence] = [float(logits[t]) - log_total for t in targets]
            scores += [found[s] for s in everyone]
        return scores

    def _generate_together(self, prompts: list[list[int]], requests: list[GenerationRequest]) -> list[Reply]:
        """Decode these sequences side by side (sequence id = position in the list)."""
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._ctx), True)
        samplers = [_Samplers(self._vocab, r, r.sampling_seed(self.model_id, SEED_BITS)) for r in requests]
        try:
            shared = min(_common_prefix(prompts), min(map(len, prompts)) - 1)  # each row keeps a token of its own
            everyone = list(range(len(prompts)))
            for start in range(0, shared, self.max_tokens_per_decode):  # the shared prefix, once for all rows
                chunk = range(start, min(shared, start + self.max_tokens_per_decode))
                self._decode([(prompts[0][p], p, everyone, False) for p in chunk])
            pending = [(prompts[s][p], p, [s], p == len(prompts[s]) - 1) for s in everyone for p in range(shared, len(prompts[s]))]
            generated: list[list[int]] = [[] for _ in prompts]
            finish: list[str | None] = [None] * len(prompts)
            rows = [_Row(r.constraint, r.max_new_tokens) for r in requests]
            while pending:
                step, pending = pending[: self.max_tokens_per_decode], pending[self.max_tokens_per_decode :]
                self._decode(step)
                for index, (_, position, (sequence,), wants_logits) in enumerate(step):
                    if wants_logits:
                        token = self._next_token(rows[sequence], samplers[sequence], index)
                        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                            finish[sequence] = STOP
                            continue
                        generated[sequence].append(token)
                        if len(generated[sequence]) >= requests[sequence].max_new_tokens:
                            finish[sequence] = LENGTH
                        else:
                            pending.append((token, position + 1, [sequence], True))
        finally:
            for sampler in samplers:
                sampler.free()
        return [Reply(self._text(tokens), reason or LENGTH) for tokens, reason in zip(generated, finish)]

    def _next_token(self, row: _Row, samplers: _Samplers, index: int) -> int:
        """Sample the row's next token from output `index`, unless its budget forces a sentinel."""
        if not row.forced and row.must_place_sentinel(self._sentinel_cost):
            sentinel = row.constraint.next_sentinels(row.state.owed)[0]
            row.forced = list(self._sentinel_tokens(sentinel, spaced=bool(row.text) and not row.text[-1].isspace()))
        if row.forced:
            token = row.forced.pop(0)
            samplers.accept(token)
        else:
            token = samplers.sample(self._ctx, index)
        row.take(self._piece(token))
        return token

    def _sentinel_tokens(self, sentinel: str, spaced: bool) -> tuple[int, ...]:
        """The tokens that place `sentinel` (after a space when `spaced`)."""
        key = (sentinel, spaced)
        if key not in self._sentinel_cache:
            self._sentinel_cache[key] = tuple(self.tokenize(" " * spaced + sentinel))
        return self._sentinel_cache[key]

    def _sentinel_cost(self, sentinel: str) -> int:
        """Tokens that placing `sentinel` may take."""
        return max(len(self._sentinel_tokens(sentinel, spaced)) for spaced in (False, True))

    def _decode(self, tokens: list[tuple[int, int, list[int], bool]]) -> None:
        """One `llama_decode` of (token, position, sequence ids, wants logits) entries."""
        batch = self._batch
        for i, (token, position, sequences, wants_logits) in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.logits[i] = token, position, wants_logits
            batch.n_seq_id[i] = len(sequences)
            for j, sequence in enumerate(sequences):
                batch.seq_id[i][j] = sequence
        batch.n_tokens = len(tokens)
        status = llama_cpp.llama_decode(self._ctx, batch)
        if status != 0:
            raise InstrAugError(f"llama.cpp decode failed with status {status} (context {self.context_size} tokens)")

    def _piece(self, token: int, special: bool = False) -> str:
        return self._piece_bytes(token, special).decode(errors="replace")

    def _piece_bytes(self, token: int, special: bool = False) -> bytes:
        buffer = ctypes.create_string_buffer(PIECE_BYTES)
        count = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, PIECE_BYTES, 0, special)
        return buffer.raw[: max(count, 0)]

    def _text(self, tokens: list[int]) -> str:
        """Reply text: the tokens' bytes joined, then decoded (a character may span tokens)."""
        return b"".join(self._piece_bytes(t) for t in tokens).decode(errors="replace")

    def close(self) -> None:
        if self._ctx:
            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_free(self._ctx)
            llama_cpp.llama_model_free(self._model)
            self._ctx = self._model = None
