"""causal-lm: GPT-style language modelling, for domain adaptation or prompt/completion pairs.

Plain text is tokenized, joined with the end-of-text token and cut into blocks of
`max_seq_length` tokens, so that no position is wasted on padding. Prompt/completion rows are
one sequence each, and with `train_on_completion_only` the prompt's tokens are left out of the
loss: the model learns to answer, not to ask. Chats (`messages_column`) are rendered with the
tokenizer's chat template, or DEFAULT_CHAT_TEMPLATE when it has none, and with
`train_on_completion_only` only the assistant's turns count. After training, a few validation
prompts are completed and saved with the model as samples.
"""

from __future__ import annotations

from typing import Any

import torch
from datasets import Dataset
from peft import TaskType
from transformers import (
    AutoModelForCausalLM,
    DataCollatorForSeq2Seq,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

from app.jobs.spec import JobSpec
from app.jobs.tasks.causal_lm import TASK
from worker.training.data import PreparedData, model_length
from worker.training.errors import DatasetInvalid, InvalidSpec
from worker.training.labels import LABELS
from worker.training.lora import LoraHead
from worker.training.metrics import perplexity
from worker.training.tasks import TaskRecipe

# Positions whose label is this are left out of the loss.
IGNORED = -100
# For tokenizers without a chat template: "role: content" lines, each assistant turn ended by
# the end-of-text token so that the model learns to stop. Saved with the model's tokenizer.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}"
    # The newline is an expression: chat templates drop a newline right after a block tag.
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}")
ASSISTANT = "assistant"
SAMPLE_PROMPTS = 3
SAMPLE_NEW_TOKENS = 24


def tokenize(prepared: PreparedData, tokenizer: PreTrainedTokenizerBase,
             spec: JobSpec) -> dict[str, Dataset]:
    length = model_length(tokenizer, spec.hyperparameters.max_seq_length)
    encode = (_chats if spec.dataset.messages_column
              else _prompt_completion if spec.dataset.prompt_column else _packed_blocks)
    return {role: encode(dataset, tokenizer, spec, length, role)
            for role, dataset in prepared.splits().items()}


def _packed_blocks(dataset: Dataset, tokenizer: PreTrainedTokenizerBase, spec: JobSpec,
                   length: int, role: str) -> Dataset:
    column, end = spec.dataset.text_column, tokenizer.eos_token_id

    def blocks(batch: dict[str, list[Any]]) -> dict[str, list[list[int]]]:
        ids = [token for text in batch[column]
               for token in [*tokenizer(text, add_special_tokens=False)["input_ids"], end]]
        # The last, shorter block is kept: small validation sets would otherwise vanish.
        chunks = [ids[start:start + length] for start in range(0, len(ids), length)]
        return {"input_ids": chunks, "attention_mask": [[1] * len(c) for c in chunks],
                LABELS: [list(c) for c in chunks]}

    if end is None:
        raise DatasetInvalid(f"{spec.model} has no end-of-text token to separate documents")
    packed = dataset.map(blocks, batched=True, remove_columns=dataset.column_names)
    if len(packed) == 0:
        raise DatasetInvalid(f"the {role} data has no text to learn from")
    return packed


def _prompt_completion(dataset: Dataset, tokenizer: PreTrainedTokenizerBase, spec: JobSpec,
                       length: int, role: str) -> Dataset:
    prompts, completions = spec.dataset.prompt_column, spec.dataset.completion_column
    completion_only = bool(spec.hyperparameters.train_on_completion_only)
    end = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

    def encode(batch: dict[str, list[Any]]) -> dict[str, list[list[int]]]:
        encoded: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], LABELS: []}
        for prompt, completion in zip(batch[prompts], batch[completions], strict=True):
            asked = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            answered = [*tokenizer(completion, add_special_tokens=False)["input_ids"], *end]
            ids = (asked + answered)[:length]
            labels = ([IGNORED] * len(asked) + answered if completion_only
                      else asked + answered)[:length]
            encoded["input_ids"].append(ids)
            encoded["attention_mask"].append([1] * len(ids))
            encoded[LABELS].append(labels)
        return encoded

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names)


def _chats(dataset: Dataset, tokenizer: PreTrainedTokenizerBase, spec: JobSpec,
           length: int, role: str) -> Dataset:
    if not tokenizer.chat_template:
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    column = spec.dataset.messages_column or ""
    completion_only = bool(spec.hyperparameters.train_on_completion_only)

    def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[list[int]]]:
        encoded: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], LABELS: []}
        for messages, number in zip(batch[column], indices, strict=True):
            text, answers = _rendered_chat(tokenizer, _checked_chat(messages, role, number))
            pieces = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                               truncation=True, max_length=length)
            ids = pieces["input_ids"]
            learned = [any(start < end_char and end > start_char for start_char, end_char
                           in answers) for start, end in pieces["offset_mapping"]]
            encoded["input_ids"].append(ids)
            encoded["attention_mask"].append([1] * len(ids))
            encoded[LABELS].append([token if keep or not completion_only else IGNORED
                                    for token, keep in zip(ids, learned, strict=True)])
        return encoded

    return dataset.map(encode, batched=True, with_indices=True,
                       remove_columns=dataset.column_names)


def _checked_chat(messages: Any, role: str, number: int) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in messages):
        raise DatasetInvalid(f"row {number} of the {role} data is not a chat: give a list of "
                             '{"role": ..., "content": ...} objects with text values')
    if not any(message["role"] == ASSISTANT for message in messages):
        raise DatasetInvalid(f"row {number} of the {role} data has no {ASSISTANT!r} message "
                             "to learn from")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _rendered_chat(tokenizer: PreTrainedTokenizerBase,
                   messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The chat as text, and the character spans of the assistant's turns in it.

    A turn's span is what rendering it adds after the conversation so far and the generation
    prompt: its content and whatever the template closes it with (the end-of-text token).
    """
    def render(turns: list[dict[str, str]], prompt: bool) -> str:
        return str(tokenizer.apply_chat_template(turns, tokenize=False,
                                                 add_generation_prompt=prompt))

    answers = []
    for index, message in enumerate(messages):
        if message["role"] == ASSISTANT:
            asked, answered = render(messages[:index], True), render(messages[:index + 1], False)
            # A template whose prompt is not a prefix of the answered chat: the whole turn.
            before = asked if answered.startswith(asked) else render(messages[:index], False)
            answers.append((len(before), len(answered)))
    return render(messages, False), answers


def chat_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> str:
    """The chat up to its last assistant turn, ready for the model to write that turn."""
    last = max(i for i, message in enumerate(messages) if message["role"] == ASSISTANT)
    return str(tokenizer.apply_chat_template(messages[:last], tokenize=False,
                                             add_generation_prompt=True))


def check_model(config: PretrainedConfig, spec: JobSpec) -> None:
    """An encoder (BERT, RoBERTa) loads with a language-model head too, but it reads the whole
    text at once: it would see every token it is asked to predict."""
    encoder = (config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES
               and not config.is_encoder_decoder and not getattr(config, "is_decoder", False))
    if encoder:
        raise InvalidSpec(f"{spec.model} is an encoder ({config.model_type}), which sees the "
                          "whole text at once and cannot learn to write it left to right",
                          hint=f"{RECIPE.models_hint}")


def collator(tokenizer: PreTrainedTokenizerBase, _: JobSpec) -> DataCollatorForSeq2Seq:
    # Pads inputs with the padding token and labels with IGNORED, so padding costs no loss.
    return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORED, padding=True)


def samples(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
            prepared: PreparedData, spec: JobSpec) -> list[dict[str, str]]:
    """Greedy completions of a few held-out prompts (or of the first half of texts)."""
    source = prepared.validation or prepared.test or prepared.train
    rows = source.select(range(min(SAMPLE_PROMPTS, len(source))))
    if spec.dataset.messages_column:
        prompts = [chat_prompt(tokenizer, chat) for chat in rows[spec.dataset.messages_column]]
    elif spec.dataset.prompt_column:
        prompts = list(rows[spec.dataset.prompt_column])
    else:
        prompts = [" ".join(text.split()[:max(1, len(text.split()) // 2)])
                   for text in rows[spec.dataset.text_column]]
    # A prompt longer than the model's positions keeps its end, which leads into the
    # completion.
    config = model.config
    positions = (getattr(config, "max_position_embeddings", None)
                 or getattr(config, "n_positions", None)
                 or model_length(tokenizer, spec.hyperparameters.max_seq_length))
    room = max(1, positions - SAMPLE_NEW_TOKENS)
    model.eval()
    written = []
    with torch.no_grad():
        for prompt in prompts:
            inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
            inputs = {name: values[:, -room:].to(model.device)
                      for name, values in inputs.items()}
            output = model.generate(**inputs, max_new_tokens=SAMPLE_NEW_TOKENS,
                                    do_sample=False, pad_token_id=tokenizer.pad_token_id)
            new_tokens = output[0][inputs["input_ids"].shape[1]:]
            written.append({"prompt": prompt,
                            "completion": tokenizer.decode(new_tokens, skip_special_tokens=True)})
    return written


RECIPE = TaskRecipe(task=TASK, model_class=AutoModelForCausalLM, pipeline="text-generation",
                    head=lambda _: {}, collator=collator,
                    models_hint="Use a GPT-style model (GPT-2, Llama, Qwen, ...); BERT-style "
                                "models learn with masked-lm.", derived_metrics=perplexity,
                    tokenize=tokenize, samples=samples, check_model=check_model,
                    lora=LoraHead(TaskType.CAUSAL_LM),
                    packs_tokens=lambda spec: not spec.dataset.prompt_column)
