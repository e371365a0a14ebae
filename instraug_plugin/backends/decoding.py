"""Batched decoding for the transformers backend, shaped for many paraphrases of one meta-prompt.

`transformers.generate` prefills every row's whole prompt, keeps finished rows in the batch until
the longest one ends, and takes one token budget for the batch. Here:

* rows with the same prefix key (the backend passes the chat turns before the last one) share the
  prefill of their longest common token prefix: each distinct prefix runs once, its KV cache is
  copied to its rows, then only each row's own suffix is prefilled (pads sit between prefix and
  suffix, masked, with positions counted over real tokens only, as left padding does);
* every row has its own token budget, and a row leaves the batch (its KV cache rows are dropped)
  as soon as it emits end-of-sequence or spends its budget, so the remaining steps are cheaper;
* logits processors run as in `generate` (custom processors first); one token is then taken by
  argmax: greedy decoding, or the token a sampling processor (`NucleusSampler`) has drawn.

Processors that keep per-row state implement `select_rows(indices)` to follow the compaction.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from transformers import DynamicCache, LogitsProcessorList, PreTrainedModel


def shared_prefixes(prompts: Sequence[Sequence[int]], keys: Sequence[Hashable]) -> tuple[list[int], list[int]]:
    """(group of each row, prefix length of each group): rows with one key share their longest
    common token prefix, capped so every row keeps at least one token of its own."""
    groups: dict[Hashable, list[int]] = {}
    for row, key in enumerate(keys):
        groups.setdefault(key, []).append(row)
    row_group = [0] * len(prompts)
    lengths: list[int] = []
    for index, rows in enumerate(groups.values()):
        first = prompts[rows[0]]
        length = min(len(prompts[row]) for row in rows) - 1
        for row in rows[1:]:
            other = prompts[row]
            common = 0
            while common < length and other[common] == first[common]:
                common += 1
            length = common
        lengths.append(max(length, 0))
        for row in rows:
            row_group[row] = index
    return row_group, lengths


def _left_padded(sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        if sequence:
            ids[row, width - len(sequence) :] = torch.tensor(sequence)
            mask[row, width - len(sequence) :] = 1
    return ids.to(device), mask.to(device)


def _positions(mask: torch.Tensor, last: int) -> torch.Tensor:
    """Position of each of the `last` columns of `mask`, counting real tokens only."""
    return (mask.cumsum(-1) - 1).clamp(min=0)[:, -last:]


@torch.inference_mode()
def decode(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    prefix_keys: Sequence[Hashable],
    budgets: Sequence[int],
    processors: LogitsProcessorList,
    eos_id: int,
    pad_id: int,
) -> list[list[int]]:
    """New token ids of each row (ending with `eos_id` unless the row spent its budget)."""
    device = model.device
    row_group, prefix_lengths = shared_prefixes(prompts, prefix_keys)
    group_rows = torch.tensor(row_group, device=device)
    cache = DynamicCache(config=model.config)
    mask = torch.zeros((len(prompts), 0), dtype=torch.long, device=device)
    if max(prefix_lengths) > 0:
        prefixes = [prompts[row_group.index(g)][:n] for g, n in enumerate(prefix_lengths)]
        ids, prefix_mask = _left_padded(prefixes, pad_id, device)
        model(input_ids=ids, attention_mask=prefix_mask, position_ids=_positions(prefix_mask, ids.shape[1]),
              past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache.batch_select_indices(group_rows)
        mask = prefix_mask[group_rows]
    suffixes = [prompt[prefix_lengths[g] :] for prompt, g in zip(prompts, row_group)]
    ids, suffix_mask = _left_padded(suffixes, pad_id, device)
    mask = torch.cat([mask, suffix_mask], dim=1)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask, ids.shape[1]),
                   past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1, :]

    replies: list[list[int]] = [[] for _ in prompts]
    active = list(range(len(prompts)))  # original row of each batch row
    generated = torch.zeros((len(prompts), 0), dtype=torch.long, device=device)
    while True:
        scores = processors(generated if generated.shape[1] else ids, logits.float())
        tokens = scores.argmax(dim=-1)
        generated = torch.cat([generated, tokens[:, None]], dim=1)
        keep = []
        for batch_row, (row, token) in enumerate(zip(active, tokens.tolist())):
            replies[row].append(token)
            if token != eos_id and len(replies[row]) < budgets[row]:
                keep.append(batch_row)
        if not keep:
            return replies
        if len(keep) < len(active):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask, generated, tokens = mask[index], generated[index], tokens[index]
            active = [active[i] for i in keep]
            for processor in processors:
                if hasattr(processor, "select_rows"):
                    processor.select_rows(keep)
        mask = torch.cat([mask, torch.ones((len(active), 1), dtype=mask.dtype, device=device)], dim=1)
        logits = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=_positions(mask, 1),
                       past_key_values=cache, use_cache=True).logits[:, -1, :]
