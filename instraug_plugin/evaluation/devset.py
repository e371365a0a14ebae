"""The online loop's development set (`instraug_adaptive`): an evaluation set's instances under each
task's original templates and the development wordings held back from the pool (`core.devsplit`).

Per task, the "original/i" variants are the evaluation set's original templates; the "heldout/j"
variants (the report's held-out kind, so PDR = 1 - development mean / original mean) are the held-back
paraphrases of those templates, found the way the training hook finds an instruction (whole text,
after media tokens, after context lines: "{scene}\\nWhat is the first shape?" matches the pool seed
"What is the first shape?") and rendered with the same context. The evaluation set's own held-out
wordings, the ones test results are reported on, are never used; a development wording equal to one
of them (or to an original template) is left out. Tasks without a development wording are left out.
"""

from __future__ import annotations

from instraug_plugin.core.placeholders import DEFAULT_SPEC, PlaceholderSpec
from instraug_plugin.core.pool import Pool, normalize
from instraug_plugin.core.sampling import InstructionRewriter
from instraug_plugin.evaluation.evalset import EvalSet, TaskSpec


def development_set(eval_set: EvalSet, dev_pool: Pool, spec: PlaceholderSpec = DEFAULT_SPEC) -> EvalSet:
    """The development set of `eval_set` (loaded with both kinds, so its test wordings are known)."""
    finder = InstructionRewriter(dev_pool, epsilon=1.0, seed=0, spec=spec)  # only its lookup is used
    tasks: dict[str, TaskSpec] = {}
    for name, task in eval_set.tasks.items():
        originals = [t for v, t in task.variants.items() if v.startswith("original/")]
        taken = {normalize(t) for t in task.variants.values()}  # originals and test wordings
        wordings: list[str] = []
        for template in originals:
            prefix, suffix, variants, _ = finder.candidates(template, name)
            for variant in variants:
                wording = prefix + variant + suffix
                if normalize(wording) not in taken and spec.same_placeholders(template, wording):
                    taken.add(normalize(wording))
                    wordings.append(wording)
        if wordings:
            variants = {f"original/{i}": t for i, t in enumerate(originals)}
            variants.update({f"heldout/{j}": t for j, t in enumerate(wordings)})
            tasks[name] = TaskSpec(name, task.metric, variants)
    instances = tuple(i for i in eval_set.instances if i.task in tasks)
    return EvalSet(f"{eval_set.name} (development wordings)", tasks, instances)
