"""seq2seq: write a target text from a source text (translation, summaries, generative QA).

An encoder-decoder (T5, BART, Marian, ...) learns to write `target_column` from
`source_prefix` + `source_column`. Evaluations generate text (`generation_max_length`,
`num_beams`) and score it against the targets: BLEU and chrF (sacrebleu) for translation,
ROUGE-1, ROUGE-2 and ROUGE-L (rouge-score) for summaries, all on a 0-1 scale like every
other metric of the service. A few validation sources and what the model writes for them are
saved with the model as samples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import sacrebleu
import torch
from datasets import Dataset
from peft import TaskType
from rouge_score import rouge_scorer
from transformers import (
    AutoModelForSeq2SeqLM,
    DataCollatorForSeq2Seq,
    EvalPrediction,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
)

from app.jobs.spec import JobSpec
from app.jobs.tasks.seq2seq import TASK
from worker.training.data import PreparedData, model_length
from worker.training.labels import LABELS
from worker.training.lora import LoraHead
from worker.training.metrics import Metrics
from worker.training.tasks import Evaluated, TaskRecipe

# Label positions with this id are padding, left out of the loss.
IGNORED = -100
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
SAMPLE_SOURCES = 3


def _sources(texts: list[str], spec: JobSpec) -> list[str]:
    return [(spec.dataset.source_prefix or "") + text for text in texts]


def tokenize(prepared: PreparedData, tokenizer: PreTrainedTokenizerBase,
             spec: JobSpec) -> dict[str, Dataset]:
    hyper, data = spec.hyperparameters, spec.dataset
    source_length = model_length(tokenizer, hyper.max_seq_length)
    target_length = model_length(tokenizer, hyper.max_target_length or source_length)

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        encoded = tokenizer(_sources(batch[data.source_column], spec), truncation=True,
                            max_length=source_length)
        targets = tokenizer(text_target=batch[data.target_column], truncation=True,
                            max_length=target_length)
        return {**encoded, LABELS: targets["input_ids"]}

    return {role: dataset.map(encode, batched=True, remove_columns=dataset.column_names)
            for role, dataset in prepared.splits().items()}


def collator(tokenizer: PreTrainedTokenizerBase, _: JobSpec) -> DataCollatorForSeq2Seq:
    # The model builds its decoder inputs from the labels; padded labels cost no loss.
    return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORED, padding=True)


def _texts(token_ids: np.ndarray, tokenizer: PreTrainedTokenizerBase) -> list[str]:
    # The Trainer pads generations of different lengths with IGNORED; decoding needs real ids.
    ids = np.where(token_ids == IGNORED, tokenizer.pad_token_id, token_ids)
    return [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]


def text_scores(written: list[str], targets: list[str]) -> Metrics:
    """BLEU, chrF and ROUGE of `written` against one target each, on a 0-1 scale."""
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    rouge = [scorer.score(target, text) for text, target in zip(written, targets, strict=True)]
    return {"bleu": sacrebleu.corpus_bleu(written, [targets]).score / 100,
            "chrf": sacrebleu.corpus_chrf(written, [targets]).score / 100,
            **{kind: float(np.mean([score[kind].fmeasure for score in rouge]))
               for kind in ROUGE_TYPES}}


def metrics(evaluated: Evaluated) -> Callable[[EvalPrediction], Metrics]:
    tokenizer = evaluated.tokenizer

    def compute(prediction: EvalPrediction) -> Metrics:
        generated = prediction.predictions
        generated = np.asarray(generated[0] if isinstance(generated, tuple) else generated)
        written = ~np.isin(generated, [IGNORED, *tokenizer.all_special_ids])
        return {**text_scores(_texts(generated, tokenizer),
                              _texts(np.asarray(prediction.label_ids), tokenizer)),
                "generated_tokens": float(written.sum(axis=1).mean())}

    return compute


def samples(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
            prepared: PreparedData, spec: JobSpec) -> list[dict[str, str]]:
    """What the model writes for a few held-out sources, beside what it should have."""
    data, hyper = spec.dataset, spec.hyperparameters
    source = prepared.validation or prepared.test or prepared.train
    rows = source.select(range(min(SAMPLE_SOURCES, len(source))))
    model.eval()
    written = []
    with torch.no_grad():
        for text, target in zip(rows[data.source_column], rows[data.target_column],
                                strict=True):
            inputs = tokenizer(_sources([text], spec), return_tensors="pt", truncation=True,
                               max_length=model_length(tokenizer, hyper.max_seq_length))
            # The decoding settings are the model's own by now (see `finish`).
            output = model.generate(**inputs.to(model.device), do_sample=False)
            written.append({"source": text, "target": target,
                            "written": tokenizer.decode(output[0], skip_special_tokens=True)})
    return written


def finish(model: PreTrainedModel, spec: JobSpec) -> None:
    """The saved model decodes as the evaluations did: `generate` needs no arguments."""
    hyper = spec.hyperparameters
    model.generation_config.max_length = hyper.generation_max_length
    model.generation_config.num_beams = hyper.num_beams or 1


def _generation_arguments(spec: JobSpec) -> dict[str, Any]:
    hyper = spec.hyperparameters
    return {"predict_with_generate": True, "generation_max_length": hyper.generation_max_length,
            "generation_num_beams": hyper.num_beams}


RECIPE = TaskRecipe(
    task=TASK, model_class=AutoModelForSeq2SeqLM, pipeline=None, head=lambda _: {},
    collator=collator,
    models_hint="Use an encoder-decoder such as T5, BART, mBART or Marian.",
    metrics=metrics, tokenize=tokenize, samples=samples, finish=finish,
    trainer_class=Seq2SeqTrainer,
    arguments_class=Seq2SeqTrainingArguments, arguments=_generation_arguments,
    lora=LoraHead(TaskType.SEQ_2_SEQ_LM))
