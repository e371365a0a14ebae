"""The media-expansion cache gives exactly what LLaMA-Factory's own mm_plugin gives, for any wording."""

from __future__ import annotations

from pathlib import Path

import pytest

from instraug_plugin.integrations.llamafactory.media_cache import MediaExpansionCache

IMAGES = Path(__file__).resolve().parents[1] / "dataset_info" / "instraug_demo" / "images"


@pytest.fixture(scope="module")
def llava(tiny_llava: Path):
    """LLaMA-Factory's real llava template plugin and the tiny LLaVA's processor."""
    from llamafactory.data.template import TEMPLATES
    from transformers import AutoProcessor

    return TEMPLATES["llava"].mm_plugin, AutoProcessor.from_pretrained(tiny_llava)


def _messages(*turns: str) -> list[dict[str, str]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]


def test_later_wordings_match_the_plugin_exactly_and_skip_it(llava) -> None:
    plugin, processor = llava
    original = plugin.process_messages
    cache = MediaExpansionCache(plugin)  # not installed: the real plugin stays untouched for the reference
    images = sorted(str(p) for p in IMAGES.glob("*.png"))[:2]
    wordings = [
        _messages("<image>\nWhat color is the shape? Compare with <image>.", "Red."),
        _messages("Compare <image> with <image> and name the colour of the first.", "Red."),
        _messages("<image> and then <image>: which colour?\nAnswer briefly.", "Red."),
    ]
    for messages in wordings:
        assert cache.process_messages(messages, images, [], [], processor) == original(messages, images, [], [], processor)
    assert (cache.misses, cache.hits) == (1, 2)
    expanded = cache.process_messages(wordings[1], images, [], [], processor)[0]["content"]
    assert expanded.count("<image>") == 2 * 16 and "Compare " in expanded  # 32x32 image, 8x8 patches


def test_install_wraps_once() -> None:
    from llamafactory.data.mm_plugin import LlavaPlugin

    plugin = LlavaPlugin(image_token="<image>", video_token=None, audio_token=None)
    first = MediaExpansionCache.install(plugin)
    assert MediaExpansionCache.install(plugin) is first
    assert plugin.process_messages == first.process_messages


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("<image><image> look", "II JJ look"),  # adjacent placeholders: where does one end?
        ("<image> look", "X look!"),  # the plugin changed text outside the placeholder
        ("a <image> b <image> b", "a X b b Y b"),  # the expansion could end at either "b"
    ],
)
def test_ambiguous_or_foreign_outputs_are_never_cached(before: str, after: str) -> None:
    outputs = {before: after}
    calls = []

    class RecordingPlugin:  # a plugin whose output is given: the cache must not generalise from it
        def process_messages(self, messages, images, videos, audios, processor):
            calls.append(1)
            return [{**m, "content": outputs[m["content"]]} for m in messages]

    cache = MediaExpansionCache.install(RecordingPlugin())
    for _ in range(2):
        assert cache.process_messages(_messages(before), ["a.png", "b.png"], [], [], None)[0]["content"] == after
    assert len(calls) == 2 and cache.hits == 0


def test_media_that_are_not_paths_are_not_cached(llava) -> None:
    plugin, processor = llava
    from PIL import Image

    cache = MediaExpansionCache(plugin)
    image = Image.open(sorted(IMAGES.glob("*.png"))[0])
    for _ in range(2):
        cache.process_messages(_messages("<image> what colour?", "Red."), [image], [], [], processor)
    assert cache.hits == 0 and cache.misses == 2


@pytest.mark.parametrize("num_proc", [None, 2])
def test_priming_learns_every_row_before_training(llava, num_proc: int | None) -> None:
    """After `prime` (in this process or in 2 `datasets.map` workers), the first wording seen in
    training already skips the plugin, and gives exactly the plugin's output."""
    from datasets import Dataset

    plugin, processor = llava
    original = plugin.process_messages
    images = sorted(str(p) for p in IMAGES.glob("*.png"))
    rows = [
        {"_prompt": _messages(f"<image>\nWhat colour is shape {i}?"), "_response": [{"role": "assistant", "content": "Red."}],
         "_images": [image], "_videos": None, "_audios": None}
        for i, image in enumerate(images)
    ] + [{"_prompt": _messages("No picture here."), "_response": [{"role": "assistant", "content": "Ok."}],
          "_images": None, "_videos": None, "_audios": None}]
    cache = MediaExpansionCache(plugin)
    assert cache.prime(Dataset.from_list(rows), processor, num_proc, load_from_cache_file=False) == len(images)
    for image in images:
        reworded = _messages("Name the colour of the shape in <image>, please.", "Red.")
        assert cache.process_messages(reworded, [image], [], [], processor) == original(reworded, [image], [], [], processor)
    assert (cache.hits, cache.misses) == (len(images), 0)
