"""Tiny models and synthetic datasets that real code paths can train on in a second or two.

The models are randomly initialised backbones saved with the real `save_pretrained`, so that
loading them for sequence classification adds a fresh head, exactly as with a pretrained
checkpoint. The datasets use one set of cue words per label, so that a tiny model learns them
within a few epochs and tests can assert that training really happened.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from sqlalchemy.orm import Session
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertModel,
    BertTokenizer,
    DistilBertConfig,
    DistilBertModel,
    ElectraConfig,
    ElectraModel,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Tokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    RobertaConfig,
    RobertaModel,
    RobertaTokenizer,
)

from app.models import Dataset
from app.storage import LocalStorage

# One group of cue words per label, in label order; labels beyond the groups reuse them.
CUE_WORDS: tuple[tuple[str, ...], ...] = (
    ("awful", "terrible", "boring", "dreadful", "poor"),
    ("great", "wonderful", "superb", "brilliant", "lovely"),
    ("okay", "average", "plain", "moderate", "fair"),
    ("strange", "weird", "odd", "bizarre", "curious"),
)
FILLER_WORDS = ("the", "movie", "film", "plot", "actors", "story", "was", "is", "really",
                "quite", "and", "music", "ending", "scenes", "director", "cast")
TOPIC_WORDS = ("cats", "dogs", "rain", "trains", "music", "football", "coffee", "mountains")
GENERIC_WORDS = ["a", "about", "after", "again", "all", "also", "always", "an", "any", "are", "as", "at", "back", "be", "because", "been", "before", "being", "best", "better", "between", "big", "both", "but", "by", "came", "can", "city", "come", "could", "country", "day", "did", "do", "does", "down", "during", "each", "early", "end", "even", "every", "eye", "face", "fact", "family", "far", "few", "find", "first", "for", "found", "friend", "from", "game", "gave", "get", "give", "go", "good", "got", "group", "had", "hand", "has", "have", "he", "head", "help", "her", "here", "high", "him", "his", "home", "house", "how", "i", "if", "in", "into", "it", "its", "just", "keep", "kind", "know", "large", "last", "late", "left", "less", "life", "like", "line", "little", "long", "look", "made", "make", "man", "many", "may", "me", "men", "might", "more", "most", "mother", "much", "must", "my", "name", "near", "need", "never", "new", "next", "night", "no", "not", "now", "number", "of", "off", "old", "on", "once", "one", "only", "open", "or", "other", "our", "out", "over", "own", "part", "people", "place", "point", "problem", "program", "public", "put", "question", "read", "right", "room", "said", "same", "saw", "say", "school", "see", "seem", "she", "should", "show", "side", "since", "small", "so", "some", "something", "state", "still", "student", "study", "such", "system", "take", "than", "that", "their", "them", "then", "there", "these", "they", "thing", "think", "this", "those", "thought", "three", "through", "time", "to", "today", "together", "too", "two", "under", "until", "up", "us", "use", "very", "want", "water", "way", "we", "week", "well", "went", "were", "what", "when", "where", "which", "while", "who", "why", "will", "with", "word", "work", "world", "would", "write", "year", "yes", "yet", "you", "young", "your"]
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_POSITIONS = 128

TINY_SIZES: dict[str, Any] = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 37}


def _corpus_words() -> list[str]:
    words = [w for group in CUE_WORDS for w in group]
    words += [*FILLER_WORDS, *TOPIC_WORDS, *GENERIC_WORDS, "not", "same", "different"]
    return list(dict.fromkeys(words))


def _wordpiece_vocab() -> dict[str, int]:
    # Single characters and their '##' continuations let unseen words split into pieces
    # instead of collapsing to [UNK].
    characters = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-")
    tokens = [*SPECIAL_TOKENS, *characters, *(f"##{c}" for c in characters), *_corpus_words()]
    return {token: index for index, token in enumerate(dict.fromkeys(tokens))}


def _trained_bpe(special_tokens: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary and merges, trained on the corpus words on the fly."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=2000, show_progress=False, special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    words = _corpus_words()
    backend.train_from_iterator([*words, *(f" {w}" for w in words)], trainer)
    bpe = json.loads(backend.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in bpe["merges"]]
    return bpe["vocab"], merges


def _byte_level_bpe() -> RobertaTokenizer:
    vocab, merges = _trained_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    # The annotation says strings, but the BPE model underneath takes (left, right) pairs.
    return RobertaTokenizer(vocab=vocab, merges=merges,  # type: ignore[arg-type]
                            model_max_length=MAX_POSITIONS)


def _tiny_backbone(family: str, vocab_size: int, pad_token_id: int) -> PreTrainedModel:
    config: PretrainedConfig
    if family == "bert":
        config = BertConfig(vocab_size=vocab_size, max_position_embeddings=MAX_POSITIONS,
                            pad_token_id=pad_token_id, **TINY_SIZES)
        return BertModel(config)
    if family == "electra":
        config = ElectraConfig(vocab_size=vocab_size, embedding_size=16,
                               max_position_embeddings=MAX_POSITIONS,
                               pad_token_id=pad_token_id, **TINY_SIZES)
        return ElectraModel(config)
    if family == "distilbert":
        config = DistilBertConfig(vocab_size=vocab_size, dim=32, n_layers=2, n_heads=2,
                                  hidden_dim=37, max_position_embeddings=MAX_POSITIONS,
                                  pad_token_id=pad_token_id)
        return DistilBertModel(config)
    if family == "roberta":
        # RoBERTa's positions start after the padding index, hence the two extra slots.
        config = RobertaConfig(vocab_size=vocab_size, max_position_embeddings=MAX_POSITIONS + 2,
                               pad_token_id=pad_token_id, bos_token_id=0, eos_token_id=2,
                               **TINY_SIZES)
        return RobertaModel(config)
    raise ValueError(f"unknown family {family!r}: use bert, electra, distilbert or roberta")


def _save_seeded(folder: Path, tokenizer: PreTrainedTokenizerBase,
                 build: Callable[[], PreTrainedModel]) -> Path:
    """Build the model with the same weights on every call (the random state is forked and
    seeded), and save it and `tokenizer` into `folder`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_tiny_bert(folder: Path, *, family: str = "bert") -> Path:
    """Save a tiny random backbone (no task head) and its tokenizer into `folder`.

    `family` is "bert" (default), "electra", "distilbert" (WordPiece) or "roberta" (byte-level
    BPE). The weights are the same on every call: the random state is forked and seeded.
    """
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = (_byte_level_bpe() if family == "roberta"
                 else BertTokenizer(vocab=_wordpiece_vocab(), model_max_length=MAX_POSITIONS))
    return _save_seeded(folder, tokenizer,
                        lambda: _tiny_backbone(family, len(tokenizer), tokenizer.pad_token_id))


def write_tiny_gpt2(folder: Path) -> Path:
    """Save a tiny random GPT-2 (with its language-model head) and a byte-level BPE tokenizer
    trained on the fly; the tokenizer has no padding token, as GPT-2's has none."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = _trained_bpe(["<|endoftext|>"])
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=merges,  # type: ignore[arg-type]
                              model_max_length=MAX_POSITIONS)
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=MAX_POSITIONS, n_embd=32,
                        n_layer=2, n_head=2, bos_token_id=end, eos_token_id=end)
    return _save_seeded(folder, tokenizer, lambda: GPT2LMHeadModel(config))


def write_tiny_bart(folder: Path) -> Path:
    """Save a tiny random BART (encoder-decoder, with its generation head) and a byte-level
    BPE tokenizer trained on the fly."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _byte_level_bpe()
    config = BartConfig(vocab_size=len(tokenizer), d_model=32, encoder_layers=2,
                        decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
                        encoder_ffn_dim=37, decoder_ffn_dim=37,
                        max_position_embeddings=MAX_POSITIONS, pad_token_id=tokenizer.pad_token_id,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        decoder_start_token_id=tokenizer.eos_token_id,
                        forced_eos_token_id=tokenizer.eos_token_id)
    return _save_seeded(folder, tokenizer, lambda: BartForConditionalGeneration(config))


def sentiment_rows(n: int, *, seed: int = 0,
                   labels: Sequence[Any] = ("negative", "positive")) -> list[dict[str, Any]]:
    """`n` rows {"text", "label"}, balanced over `labels`, each label with its own cue words."""
    rng = random.Random(seed)
    rows = []
    for index in range(n):
        label_index = index % len(labels)
        cues = CUE_WORDS[label_index % len(CUE_WORDS)]
        words = [*rng.sample(FILLER_WORDS, 3), rng.choice(cues), rng.choice(cues),
                 *rng.sample(FILLER_WORDS, 2)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": labels[label_index]})
    rng.shuffle(rows)
    return rows


def multi_label_rows(n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """`n` rows {"text", "labels"}: one or two of three labels, each with its cue words."""
    rng = random.Random(seed)
    names = ("negative", "positive", "neutral")
    rows = []
    for _ in range(n):
        chosen = rng.sample(range(len(names)), rng.choice((1, 2)))
        words = [*(rng.choice(CUE_WORDS[group]) for group in chosen for _ in range(2)),
                 *rng.sample(FILLER_WORDS, 3)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "labels": sorted(names[g] for g in chosen)})
    return rows


def entity_rows(n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """`n` rows {"tokens", "tags"}: topic words are B-TOPIC, cue words B-MOOD, the rest O."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [*rng.sample(FILLER_WORDS, 4), rng.choice(TOPIC_WORDS),
                 rng.choice(CUE_WORDS[rng.randrange(2)])]
        rng.shuffle(words)
        tags = ["B-TOPIC" if w in TOPIC_WORDS else "O" if w in FILLER_WORDS else "B-MOOD"
                for w in words]
        rows.append({"tokens": words, "tags": tags})
    return rows


def write_conll(path: Path, rows: list[dict[str, Any]]) -> Path:
    """`rows` of {"tokens", "tags"} as a CoNLL file: a word and its tag per line."""
    path.write_text("".join("".join(f"{word} {tag}\n" for word, tag in
                                    zip(row["tokens"], row["tags"], strict=True)) + "\n"
                            for row in rows))
    return path


def regression_rows(n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """`n` rows {"text", "score"}: the score is the number of positive minus negative cues."""
    rng = random.Random(seed)
    negative, positive = CUE_WORDS[0], CUE_WORDS[1]
    rows = []
    for _ in range(n):
        n_positive, n_negative = rng.randint(0, 3), rng.randint(0, 3)
        words = [*rng.choices(positive, k=n_positive), *rng.choices(negative, k=n_negative),
                 *rng.sample(FILLER_WORDS, 3)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "score": float(n_positive - n_negative)})
    return rows


def pair_rows(n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """`n` rows {"premise", "hypothesis", "label"}: "same" when both name the same topic."""
    rng = random.Random(seed)
    rows = []
    for index in range(n):
        topic = rng.choice(TOPIC_WORDS)
        same = index % 2 == 0
        other = topic if same else rng.choice([t for t in TOPIC_WORDS if t != topic])
        rows.append({
            "premise": " ".join([topic, *rng.sample(FILLER_WORDS, 3)]),
            "hypothesis": " ".join([*rng.sample(FILLER_WORDS, 2), other]),
            "label": "same" if same else "different",
        })
    return rows


def qa_rows(n: int, *, seed: int = 0, unanswerable: float = 0.0) -> list[dict[str, Any]]:
    """`n` SQuAD rows {"question", "context", "answers"}: "what topic" is answered by the
    context's topic word, "what mood" by its cue word. A share `unanswerable` of the contexts
    lack the asked-for word, and their answers are empty."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        asks_topic, answered = rng.random() < 0.5, rng.random() >= unanswerable
        topic, mood = rng.choice(TOPIC_WORDS), rng.choice(CUE_WORDS[rng.randrange(2)])
        words = [*rng.sample(FILLER_WORDS, 5), *([topic] if answered or not asks_topic else []),
                 *([mood] if answered or asks_topic else [])]
        rng.shuffle(words)
        context, answer = " ".join(words), topic if asks_topic else mood
        start = (f" {context} ".index(f" {answer} ") if answered else -1)
        rows.append({"question": f"what {'topic' if asks_topic else 'mood'} ?",
                     "context": context,
                     "answers": {"text": [answer] if answered else [],
                                 "answer_start": [start] if answered else []}})
    return rows


def seq2seq_rows(n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """`n` rows {"source", "target"}: the target names the source's topic and mood words, as
    a very short summary (four words, so that BLEU has a 4-gram to count)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        topic, mood = rng.choice(TOPIC_WORDS), rng.choice(CUE_WORDS[rng.randrange(2)])
        words = [*rng.sample(FILLER_WORDS, 4), topic, mood]
        rng.shuffle(words)
        rows.append({"source": " ".join(words), "target": f"about {topic} and {mood}"})
    return rows


def predicted_answer(model_dir: Path, question: str, context: str) -> str:
    """A saved question-answering model's answer, read the plain transformers way (5.x has no
    question-answering pipeline): the best start in the context, then the best end from it."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir)
    inputs = tokenizer(question, context, return_tensors="pt", return_offsets_mapping=True)
    offsets = inputs.pop("offset_mapping")[0]
    with torch.no_grad():
        output = model(**inputs)
    context_tokens = torch.tensor([part == 1 for part in inputs.sequence_ids(0)])
    start = int(output.start_logits[0].masked_fill(~context_tokens, -1e9).argmax())
    end = int(output.end_logits[0].masked_fill(~context_tokens, -1e9)[start:].argmax()) + start
    return context[int(offsets[start][0]):int(offsets[end][1])]


def generated_text(model_dir: Path, source: str, max_new_tokens: int = 10) -> str:
    """What a saved encoder-decoder writes for `source`, greedily."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir)
    written = model.generate(**tokenizer(source, return_tensors="pt"),
                             max_new_tokens=max_new_tokens)
    return tokenizer.decode(written[0], skip_special_tokens=True).strip()


def write_rows(path: Path, rows: list[dict[str, Any]], fmt: str | None = None) -> Path:
    """Write `rows` as csv, tsv, jsonl, json (one array) or parquet, by `fmt` or the suffix."""
    fmt = fmt or path.suffix.lstrip(".").lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt in ("jsonl", "ndjson"):
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    elif fmt == "json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif fmt in ("csv", "tsv"):
        pd.DataFrame(rows).to_csv(path, index=False, sep="\t" if fmt == "tsv" else ",")
    elif fmt == "parquet":
        pd.DataFrame(rows).to_parquet(path, index=False)
    else:
        raise ValueError(f"unknown format {fmt!r} for {path.name}")
    return path


class Canary:
    """Pickles to a call of Path.touch(marker): what any code in a checkpoint could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Path]]:
        return Path.touch, (self.marker,)


def write_canary(path: Path, marker: Path) -> None:
    torch.save(Canary(marker), path)


def pickled_model(tiny_bert: Path, folder: Path, marker: Path,
                  weights: tuple[str, ...] = ("pytorch_model.bin",)) -> Path:
    """The tiny BERT with its safetensors weights replaced by canary pickles."""
    shutil.copytree(tiny_bert, folder)
    (folder / "model.safetensors").unlink()
    for name in weights:
        write_canary(folder / name, marker)
    return folder


def stored_sentiment_dataset(session: Session, storage: LocalStorage, project_id: str) -> Dataset:
    """A 40-row sentiment CSV in `storage` with its row, as an upload leaves them."""
    dataset = Dataset(project_id=project_id, name="train.csv", format="csv",
                      source_format="csv", layout="tabular", layout_details={},
                      size_bytes=0, sha256="0" * 64, num_rows=40,
                      columns=[{"name": "text"}, {"name": "label"}])
    session.add(dataset)
    session.flush()
    path = storage.dataset_path(dataset.id, "csv")
    path.parent.mkdir(parents=True)
    write_rows(path, sentiment_rows(40))
    return dataset
