"""The card's layout and its hand-written prose (the repository's ``MODEL_CARD.md``).

Generated sections sit between ``<!-- modelkit:begin NAME -->`` / ``<!-- modelkit:end NAME -->``
markers. Sections the tool cannot fill come from ``MODEL_CARD.md`` (or ``[tool.modelkit.card]
path``); until written they carry ``<!-- modelkit:todo NAME -->`` and ``[More Information
Needed]``, which :func:`card_incomplete` finds (``card --strict`` and ``release`` refuse them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelkit.card.metadata import split_front_matter
from modelkit.card.options import card_options
from modelkit.errors import BadInputError
from modelkit.runs.layout import recorded_roots

BEGIN = "<!-- modelkit:begin {} -->"


END = "<!-- modelkit:end {} -->"


BLOCK_RE = re.compile(
    r"<!-- modelkit:begin (?P<name>[\w-]+) -->\n.*?<!-- modelkit:end (?P=name) -->", re.S
)


TODO_RE = re.compile(r"<!-- modelkit:todo (?P<name>[\w-]+) -->")


MORE_INFO = "[More Information Needed]"


PROSE_FILE = "MODEL_CARD.md"


COMMENT_RE = re.compile(r"<!--(?! modelkit:).*?-->", re.S)  # an HTML comment, not a marker
HEADING_RE = re.compile(r"^## +(?P<title>.+?) *$", re.M)


LAYOUT_FILE = Path(__file__).with_name("layout.md")
SLOT_RE = re.compile(r"^\{\{(?P<hand>hand:)?(?P<name>[\w-]+)(?: *\| *(?P<what>.+?))?\}\}$")


@dataclass(frozen=True)
class LayoutItem:
    """One line of the layout: a heading, a generated slot, a hand-written slot, or text."""

    kind: str  # "heading" | "slot" | "hand" | "text"
    value: str  # the heading's title, the slot's name, or the text
    what: str = ""  # for "hand": what to write there


def read_layout(path: Path = LAYOUT_FILE) -> list[LayoutItem]:
    """Parse the card layout (``layout.md``) into items, its leading comment dropped."""
    text = path.read_text(encoding="utf-8")
    if text.startswith("<!--"):
        text = text[text.index("-->") + 3 :]
    items = []
    for line in text.strip("\n").splitlines():
        heading = HEADING_RE.match(line)
        slot = SLOT_RE.match(line.strip())
        if heading:
            items.append(LayoutItem("heading", heading.group("title")))
        elif slot:
            kind = "hand" if slot.group("hand") else "slot"
            items.append(LayoutItem(kind, slot.group("name"), slot.group("what") or ""))
        else:
            items.append(LayoutItem("text", line))
    return items


def _outline(
    layout: list[LayoutItem],
) -> tuple[list[tuple[str, str | None]], dict[str, tuple[str, str]]]:
    """``(headings with their generated slot or None, hand-written name -> (heading, what))``."""
    order: list[tuple[str, str | None]] = []
    hand: dict[str, tuple[str, str]] = {}
    for i, item in enumerate(layout):
        if item.kind != "heading":
            continue
        slot = next((x for x in layout[i + 1 :] if x.kind != "text"), None)
        order.append((item.value, slot.value if slot and slot.kind == "slot" else None))
        if slot is not None and slot.kind == "hand":
            hand[slot.value] = (item.value, slot.what)
    return order, hand


LAYOUT = read_layout()
ORDER, TODO_SECTIONS = _outline(LAYOUT)
TODO_BY_TITLE = {v[0]: k for k, v in TODO_SECTIONS.items()}


def block(name: str, content: str) -> str:
    return f"{BEGIN.format(name)}\n{content.rstrip()}\n{END.format(name)}"


@dataclass(frozen=True)
class Prose:
    """The hand-written parts of the card, from the repository's MODEL_CARD.md."""

    path: Path
    meta: dict[str, Any]
    intro: str
    sections: dict[str, str]  # "## heading" -> its text, in file order


def prose_path(project: Any, run_dir: Path | None = None) -> Path | None:
    """``[tool.modelkit.card] path`` (relative to the project root), else ``MODEL_CARD.md``.

    Without a pyproject.toml, the MODEL_CARD.md next to the folders ``run_dir``'s run.json
    records (the training script's folder, its working directory, the git root), if any.
    """
    root = getattr(project, "root", None)
    if root is None:
        found = [d / PROSE_FILE for d in recorded_roots(run_dir) if run_dir is not None]
        return next((p for p in found if p.is_file()), None)
    chosen = card_options(project).path
    rel = chosen if chosen is not None else PROSE_FILE
    if not isinstance(rel, str) or not rel:
        raise BadInputError(
            "[tool.modelkit.card] path must be a file path (a string)",
            hint=f'for example: path = "{PROSE_FILE}"',
        )
    return Path(root) / rel


def read_prose(project: Any, run_dir: Path | None = None) -> Prose | None:
    """The project's card prose file, parsed into sections (None when the file is absent)."""
    path = prose_path(project, run_dir)
    if path is None or not path.is_file():
        if path is not None and card_options(project).path:
            raise BadInputError(
                f"the card prose file {path} ([tool.modelkit.card] path) does not exist",
                hint="create it (modelkit init writes one), or fix the path",
            )
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"cannot read {path}: {exc}", hint="it must be UTF-8 text") from None
    meta, body, errors = split_front_matter(text)
    if errors:
        raise BadInputError(f"{path}: {errors[0]}", hint="fix or delete its YAML front matter")
    if meta is not None and not isinstance(meta, dict):
        raise BadInputError(f"{path}: the YAML front matter must be a mapping", hint="key: value")
    matches = [m for m in HEADING_RE.finditer(body) if not in_fence(body, m.start())]
    intro = body[: matches[0].start()] if matches else body
    intro = COMMENT_RE.sub("", intro)  # the file's own instructions stay out of the card
    intro = "\n".join(line for line in intro.splitlines() if not line.startswith("# "))
    sections = {}
    for i, m in enumerate(matches):
        stop = matches[i + 1].start() if i + 1 < len(matches) else len(body)
        sections[m.group("title")] = body[m.end() : stop].strip("\n")
    return Prose(path, dict(meta or {}), intro.strip("\n"), sections)


def in_fence(text: str, pos: int) -> bool:
    return text[:pos].count("\n```") % 2 == 1


def todo_text(todo: str) -> str:
    return (
        f"<!-- modelkit:todo {todo} -->\n_{TODO_SECTIONS[todo][1]}_ "
        f"Write it in {PROSE_FILE} and delete the todo marker.\n\n{MORE_INFO}"
    )


def fresh_body(title: str, sections: dict[str, str], prose: Prose | None = None) -> str:
    """The card's body: the layout's slots filled with ``sections`` and ``prose``."""
    hand = dict(prose.sections) if prose else {}
    parts: list[str] = []
    written = ""  # the prose under the current heading
    for item in LAYOUT:
        if item.kind == "heading":
            written = (hand.pop(item.value, None) or "").strip()
            parts += [f"## {item.value}", ""] + ([written, ""] if written else [])
        elif item.kind == "slot":
            parts += [block(item.value, sections[item.value]), ""]
            if item.value == "summary" and prose and prose.intro.strip():
                parts += [prose.intro.strip(), ""]
        elif item.kind == "hand":
            if not written:
                parts += [todo_text(item.value), ""]
        else:
            parts.append(item.value.replace("{{title}}", title))
    for heading, text in hand.items():  # the maintainer's own extra sections
        parts += [f"## {heading}", "", text.strip(), ""]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(parts)).rstrip("\n") + "\n"


def card_incomplete(text: str) -> list[str]:
    """Sections still to be written by hand: a todo marker or ``[More Information Needed]``."""
    _, body, _ = split_front_matter(text)
    found: list[str] = []
    matches = list(HEADING_RE.finditer(body))
    for i, m in enumerate(matches):
        stop = matches[i + 1].start() if i + 1 < len(matches) else len(body)
        chunk = body[m.end() : stop]
        todos = TODO_RE.findall(chunk)
        if todos or MORE_INFO in chunk:
            found += [t for t in todos if t not in found] or [m.group("title")]
    for t in TODO_RE.findall(body):
        if t not in found:
            found.append(t)
    return found


def card_todos(text: str) -> list[str]:
    """Names of sections still marked as to be written by hand."""
    return TODO_RE.findall(text)


def merge_body(existing: str, sections: dict[str, str]) -> tuple[str, list[str]]:
    kept: list[str] = []

    def repl(m: re.Match[str]) -> str:
        name = m.group("name")
        if name in sections:
            return block(name, sections[name])
        kept.append(name)
        return m.group(0)

    return BLOCK_RE.sub(repl, existing), kept
