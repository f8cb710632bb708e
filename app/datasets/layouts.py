"""The layouts of rows that fields and tools distribute, recognised from an upload's columns:
what each one means, how its records are checked (and, for Alpaca and ShareGPT, rewritten into
the columns the tasks read), and which tasks it fits with which dataset fields.

Recognition looks at the column names only, in a fixed order, so that a file is never read as
the neighbouring layout by accident: `chosen` + `rejected` is a preference set before anything
else, `conversations` is ShareGPT, `messages` an OpenAI-style chat, `instruction` + `output`
Alpaca, `prompt` + `completion` prompt/completion pairs. An upload may name its layout instead
(`tabular` takes the columns as they are).

Standard library only: the API inspects uploads with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.datasets.inspection import DatasetFormatError

# Checks one record, named by where it is ("record 12"), and gives it in the tasks' columns.
RecordReader = Callable[[dict[str, Any], str], dict[str, Any]]


@dataclass(frozen=True)
class Layout:
    name: str
    title: str
    columns: tuple[str, ...]  # the columns that make it, as uploaded
    # The dataset fields each task it fits uses, by task; recognised layouts name their own.
    tasks: dict[str, dict[str, Any]]


_PROMPT_COMPLETION = {"prompt_column": "prompt", "completion_column": "completion"}
_PAIR_TASKS = {"causal-lm": _PROMPT_COMPLETION,
               "seq2seq": {"source_column": "prompt", "target_column": "completion"}}
_CHAT_TASKS = {"causal-lm": {"messages_column": "messages"}}

# In the order recognition tries them.
LAYOUTS = {layout.name: layout for layout in (
    Layout("squad", "SQuAD JSON", (), {"question-answering": {}}),
    Layout("conll", "CoNLL", (), {"token-classification": {}}),
    Layout("preference", "preference pairs", ("chosen", "rejected"), {}),
    Layout("sharegpt", "ShareGPT conversations", ("conversations",), _CHAT_TASKS),
    Layout("openai-chat", "OpenAI-style chats", ("messages",), _CHAT_TASKS),
    Layout("alpaca", "Alpaca instructions", ("instruction", "output"), _PAIR_TASKS),
    Layout("prompt-completion", "prompt/completion pairs", ("prompt", "completion"),
           _PAIR_TASKS),
    Layout("tabular", "columns as uploaded", (), {}),
)}
# Layouts that only a file format gives (SQuAD's nesting, CoNLL's lines).
FILE_LAYOUTS = ("squad", "conll")
# Declarable on upload: the column layouts.
DECLARABLE = tuple(name for name in LAYOUTS if name not in FILE_LAYOUTS)

# What the Stanford Alpaca release trained on: its prompt templates, verbatim.
ALPACA_PREAMBLE = ("Below is an instruction that describes a task. Write a response that "
                   "appropriately completes the request.")
ALPACA_PREAMBLE_WITH_INPUT = ("Below is an instruction that describes a task, paired with an "
                              "input that provides further context. Write a response that "
                              "appropriately completes the request.")
# ShareGPT speakers, and OpenAI's roles, as the chat template's roles.
CHAT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
              "chatgpt": "assistant", "system": "system"}


def recognise(column_names: list[str], declared: str | None) -> Layout:
    """The layout `declared` names, when its columns are there, else the first whose columns
    all are; `tabular` when none fits."""
    present = set(column_names)
    if declared is not None:
        name = declared.strip().lower()
        if name not in DECLARABLE:
            raise DatasetFormatError(f"Unknown layout {declared!r}; declare one of "
                                     f"{', '.join(DECLARABLE)}.", code="unsupported_layout")
        layout = LAYOUTS[name]
        missing = [column for column in layout.columns if column not in present]
        if missing:
            raise DatasetFormatError(
                f"The {layout.title} layout needs the column{'s' if len(missing) > 1 else ''} "
                f"{', '.join(map(repr, missing))}; the file has {', '.join(map(repr, column_names))}.",
                code="unsupported_layout")
        return layout
    return next(layout for layout in LAYOUTS.values() if layout.name not in FILE_LAYOUTS
                and all(column in present for column in layout.columns))


def record_reader(layout: Layout) -> RecordReader | None:
    """What checks (and rewrites) each record of `layout`, called with the record and where it
    is ("record 12"); None for layouts whose records the inspection's types already cover."""
    return _RECORD_READERS.get(layout.name)


def _alpaca(row: dict[str, Any], where: str) -> dict[str, Any]:
    def text(name: str, required: bool) -> str:
        value = row.get(name)
        if value is None or value == "":
            if required:
                raise _invalid("alpaca", where, f'"{name}" is empty or missing')
            return ""
        if not isinstance(value, str):
            raise _invalid("alpaca", where, f'"{name}" must be text, not {_kind(value)}')
        return value

    if row.get("history"):
        raise _invalid("alpaca", where, '"history" (earlier turns) is not read; write '
                                        "multi-turn data as ShareGPT conversations instead")
    instruction, extra = text("instruction", True), text("input", False)
    system, output = text("system", False), text("output", True)
    preamble = system or (ALPACA_PREAMBLE_WITH_INPUT if extra else ALPACA_PREAMBLE)
    given = f"\n\n### Input:\n{extra}" if extra else ""
    rest = {key: value for key, value in row.items()
            if key not in ("instruction", "input", "output", "system", "history")}
    return {**rest, "prompt": f"{preamble}\n\n### Instruction:\n{instruction}{given}"
                              "\n\n### Response:\n",
            "completion": output}


def _sharegpt(row: dict[str, Any], where: str) -> dict[str, Any]:
    messages = _turns(row.get("conversations"), "conversations", "sharegpt", where)
    system = row.get("system")
    if system:
        if not isinstance(system, str):
            raise _invalid("sharegpt", where, '"system" must be text')
        messages.insert(0, {"role": "system", "content": system})
    rest = {key: value for key, value in row.items() if key not in ("conversations", "system")}
    return {**rest, "messages": messages}


def _openai_chat(row: dict[str, Any], where: str) -> dict[str, Any]:
    return {**row, "messages": _turns(row.get("messages"), "messages", "chat", where)}


def _preference(row: dict[str, Any], where: str) -> dict[str, Any]:
    kinds = set()
    for name in ("prompt", "chosen", "rejected"):
        value = row.get(name)
        if name == "prompt" and value is None:
            continue
        if isinstance(value, list):
            _turns(value, name, "preference", where)
            kinds.add("chat")
        elif isinstance(value, str) and value.strip():
            kinds.add("text")
        else:
            raise _invalid("preference", where, f'"{name}" must be non-empty text or a chat '
                                                f"(a list of turns), not {_kind(value)}")
    if isinstance(row["chosen"], list) != isinstance(row["rejected"], list):
        raise _invalid("preference", where, '"chosen" and "rejected" must both be text or '
                                            "both be chats")
    return row


def _turns(value: Any, column: str, layout: str, where: str) -> list[dict[str, str]]:
    """A chat's turns as {role, content}, from OpenAI's {role, content} or ShareGPT's
    {from, value}."""
    if not isinstance(value, list) or not value:
        raise _invalid(layout, where, f'"{column}" must be a non-empty list of turns, not '
                                      f"{_kind(value)}")
    turns = []
    for number, turn in enumerate(value):
        at = f"{column}[{number}]"
        if not isinstance(turn, dict):
            raise _invalid(layout, where, f"{at} must be an object, not {_kind(turn)}")
        speaker = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value"))
        role = CHAT_ROLES.get(speaker) if isinstance(speaker, str) else None
        if role is None:
            raise _invalid(layout, where, f"{at} has the speaker {speaker!r}; expected one of "
                                          f"{', '.join(CHAT_ROLES)} (tool turns are not "
                                          "supported)")
        if not isinstance(content, str):
            raise _invalid(layout, where, f"{at} must hold its text in \"content\" (or ShareGPT's "
                                          f"\"value\"), not {_kind(content)}")
        turns.append({"role": role, "content": content})
    if not any(turn["role"] == "assistant" for turn in turns):
        raise _invalid(layout, where, f'"{column}" has no assistant turn to learn from')
    return turns


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    names = {str: "text", bool: "a boolean", int: "a number", float: "a number",
             list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def _invalid(layout: str, where: str, problem: str) -> DatasetFormatError:
    return DatasetFormatError(f"{where[0].upper()}{where[1:]}: {problem}.",
                              code=f"dataset_invalid_{layout}")


_RECORD_READERS = {"alpaca": _alpaca, "sharegpt": _sharegpt, "openai-chat": _openai_chat,
                   "preference": _preference}
