"""Teacher-labelled extra training data: the unlabelled pool and augmented training sentences.

Augmentation works on token ids (the student shares the teacher's tokenizer at distill time), so no
text is decoded and re-tokenised. Two seeded edits, after TinyBERT's data augmentation:
- neighbours: a share of a sentence's whole-word tokens become one of their k nearest neighbours
  (cosine) in the teacher's word-embedding matrix, chosen among whole-word tokens only;
- mask: a share of its tokens become the mask (or unknown) token, or are dropped.
Extra examples carry no gold label: in a mixed batch they are marked with NO_LABEL and get the
soft-target term only (:func:`mixed_soft_loss`).
"""

import logging
import random
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from edgekd.data.tokenize import encode
from edgekd.distill.config import ExtraDataConfig
from edgekd.errors import ConfigError

log = logging.getLogger(__name__)

NO_LABEL = -100  # label of an extra example in a mixed batch (also F.cross_entropy's ignore_index)
# How a tokenizer marks word pieces: WordPiece prefixes continuations; byte-level BPE and
# SentencePiece prefix word starts instead (so a token without the marker continues a word).
_CONTINUATION_PREFIX = "##"
_WORD_START_MARKERS = ("Ġ", "▁")


@dataclass
class ExtraExamples:
    ids: list[list[int]]  # token ids per example, [CLS] ... [SEP] like the training split's
    kinds: list[str]  # "unlabelled" or "augmented", per example

    def __len__(self) -> int:
        return len(self.ids)

    def counts(self) -> dict[str, int]:
        return {kind: self.kinds.count(kind) for kind in ("unlabelled", "augmented")}


@dataclass
class TokenClasses:
    """Per vocabulary id [V]: special token, continues a word (a ## piece), whole-word candidate."""

    special: np.ndarray
    continues: np.ndarray
    whole_word: np.ndarray


def token_classes(tokenizer, vocab_size: int) -> TokenClasses:
    """Classify the first ``vocab_size`` ids; whole-word candidates are alphabetic, not special, not pieces."""
    known = min(vocab_size, len(tokenizer))  # embedding tables may be padded past the vocabulary
    tokens = tokenizer.convert_ids_to_tokens(list(range(known))) + [""] * (vocab_size - known)
    tokens = [t if isinstance(t, str) else "" for t in tokens]
    special = np.zeros(vocab_size, dtype=bool)
    special[[i for i in tokenizer.all_special_ids if i < vocab_size]] = True
    marker = None
    if not any(t.startswith(_CONTINUATION_PREFIX) for t in tokens):
        marker = next((m for m in _WORD_START_MARKERS if any(t.startswith(m) for t in tokens)), None)
    if marker is None:  # WordPiece (or no sub-word marks at all: every token is a word)
        continues = np.array([t.startswith(_CONTINUATION_PREFIX) for t in tokens])
        bare = tokens
    else:
        continues = np.array([not t.startswith(marker) for t in tokens])
        bare = [t.removeprefix(marker) for t in tokens]
    continues &= ~special
    whole_word = np.array([b.isalpha() for b in bare]) & ~continues & ~special
    return TokenClasses(special=special, continues=continues, whole_word=whole_word)


def whole_word_positions(ids: list[int], classes: TokenClasses) -> list[int]:
    """Positions whose token is a whole-word candidate and is not followed by a piece of the same word."""
    return [i for i, t in enumerate(ids)
            if classes.whole_word[t] and not (i + 1 < len(ids) and classes.continues[ids[i + 1]])]


@dataclass
class NeighbourTable:
    used: np.ndarray  # [V_used] token ids that have neighbours
    table: np.ndarray  # [V_used, k] their nearest whole-word tokens, nearest first

    def __post_init__(self):
        self._row = {int(t): r for r, t in enumerate(self.used)}

    def of(self, token_id: int) -> np.ndarray:
        return self.table[self._row[token_id]]


@torch.no_grad()
def nearest_neighbours(embeddings: torch.Tensor, used: list[int], candidates: np.ndarray, k: int,
                       chunk: int = 1024) -> NeighbourTable:
    """k nearest ``candidates`` (cosine, never the token itself) of each ``used`` token.

    ``embeddings`` is the word-embedding matrix [V, H]. Similarities are computed ``chunk`` used
    tokens at a time ([chunk, V_candidates]), never as the full [V, V] matrix.
    """
    cand = torch.as_tensor(np.flatnonzero(candidates))
    k = min(k, len(cand) - 1)
    if k < 1 or not used:
        raise ConfigError("distill.extra_data: the tokenizer has too few whole-word tokens for neighbour replacement")
    unit = F.normalize(embeddings.float(), dim=-1)
    cand_unit = unit[cand]  # [C, H]
    used_t = torch.as_tensor(used)
    rows = []
    for start in range(0, len(used), chunk):
        ids = used_t[start:start + chunk]
        sims = unit[ids] @ cand_unit.T  # [chunk, C]
        sims[cand.unsqueeze(0) == ids.unsqueeze(1)] = -float("inf")  # a word is not its own neighbour
        rows.append(cand[sims.topk(k, dim=-1).indices])
    return NeighbourTable(used=used_t.numpy(), table=torch.cat(rows).numpy())


def _changed_count(n: int, fraction: float) -> int:
    # At least one change, so every variant differs from its sentence.
    return min(n, max(1, round(fraction * n))) if n else 0


def replace_with_neighbours(ids: list[int], classes: TokenClasses, neighbours: NeighbourTable, fraction: float,
                            rng: random.Random) -> list[int]:
    """A copy of ``ids`` with ``fraction`` of its whole words swapped for an embedding neighbour."""
    positions = whole_word_positions(ids, classes)
    out = list(ids)
    for i in rng.sample(positions, _changed_count(len(positions), fraction)):
        out[i] = int(rng.choice(neighbours.of(ids[i])))
    return out


def mask_tokens(ids: list[int], classes: TokenClasses, fraction: float, mask_id: int, rng: random.Random,
                drop: bool = False) -> list[int]:
    """A copy of ``ids`` with ``fraction`` of its non-special tokens masked (or dropped)."""
    positions = [i for i, t in enumerate(ids) if not classes.special[t]]
    chosen = set(rng.sample(positions, _changed_count(len(positions), fraction)))
    if drop:
        return [t for i, t in enumerate(ids) if i not in chosen]
    return [mask_id if i in chosen else t for i, t in enumerate(ids)]


def _neighbour_or_mask(ids, classes, neighbours, fraction, mask_id, rng) -> list[int]:
    """Method "both": each chosen whole word becomes a neighbour or the mask token, evenly."""
    positions = whole_word_positions(ids, classes)
    out = list(ids)
    for i in rng.sample(positions, _changed_count(len(positions), fraction)):
        out[i] = int(rng.choice(neighbours.of(ids[i]))) if rng.random() < 0.5 else mask_id
    return out


def augment(sentences: list[list[int]], tokenizer, embeddings: torch.Tensor, cfg: ExtraDataConfig, seed: int,
            limit: int | None = None) -> list[list[int]]:
    """``cfg.augment_copies`` variants of each sentence (token ids), in sentence order, at most ``limit``.

    Variants equal to their sentence (nothing to change) are left out. Same seed, same variants.
    """
    classes = token_classes(tokenizer, embeddings.shape[0])
    mask_id = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.unk_token_id
    if cfg.augment_method != "neighbours" and mask_id is None:
        raise ConfigError(f"distill.extra_data.augment_method: {cfg.augment_method!r} needs a mask or unknown token, "
                          "which the tokenizer lacks; use 'neighbours'")
    neighbours = None
    if cfg.augment_method != "mask":
        used = sorted({s[i] for s in sentences for i in whole_word_positions(s, classes)})
        neighbours = nearest_neighbours(embeddings, used, classes.whole_word, cfg.neighbours)
        log.info("embedding neighbours: %d used whole-word tokens x %d, among %d candidates", len(used),
                 neighbours.table.shape[1], int(classes.whole_word.sum()))
    rng = random.Random(seed)
    out: list[list[int]] = []
    for ids in sentences:
        for _ in range(cfg.augment_copies):
            if cfg.augment_method == "neighbours":
                variant = replace_with_neighbours(ids, classes, neighbours, cfg.augment_fraction, rng)
            elif cfg.augment_method == "mask":
                variant = mask_tokens(ids, classes, cfg.augment_fraction, mask_id, rng)
            else:
                variant = _neighbour_or_mask(ids, classes, neighbours, cfg.augment_fraction, mask_id, rng)
            if variant != ids:
                out.append(variant)
            if limit is not None and len(out) >= limit:
                return out
    return out


def build_extra_examples(tokenizer, teacher, unlabelled_texts: list[str], train_ids: list[list[int]],
                         cfg: ExtraDataConfig, seed: int, max_length: int) -> ExtraExamples:
    """The unlabelled pool first, then augmented training sentences, up to ``cfg.max_extra`` in all."""
    ids: list[list[int]] = []
    if cfg.unlabelled:
        if not unlabelled_texts:
            raise ConfigError("distill.extra_data.unlabelled: the data step kept no unlabelled texts; name their "
                              "label in data.unlabelled_labels (e.g. [plot]) or set unlabelled: false")
        ids = encode(tokenizer, unlabelled_texts, max_length)[: cfg.max_extra]
    n_unlabelled = len(ids)
    if cfg.augment_copies > 0 and (cfg.max_extra is None or len(ids) < cfg.max_extra):
        limit = None if cfg.max_extra is None else cfg.max_extra - len(ids)
        embeddings = teacher.get_input_embeddings().weight.detach().cpu()  # [V, H]
        ids += augment(train_ids, tokenizer, embeddings, cfg, seed, limit)
    return ExtraExamples(ids=ids, kinds=["unlabelled"] * n_unlabelled + ["augmented"] * (len(ids) - n_unlabelled))


def extra_data_metrics(extra: ExtraExamples, teacher_logits: np.ndarray, n_train: int,
                       label_names: list[str]) -> dict:
    """How much extra data was used, by kind, and the teacher's argmax labels on it ([N_extra, C] logits)."""
    predicted = teacher_logits.argmax(-1) if len(teacher_logits) else np.zeros(0, dtype=int)
    kinds = np.asarray(extra.kinds)
    labels = {kind: {label_names[c]: n for c, n in sorted(Counter(predicted[kinds == kind].tolist()).items())}
              for kind, count in extra.counts().items() if count}
    return {"examples": extra.counts(), "total": len(extra), "labelled_train": n_train,
            "extra_share": round(len(extra) / max(1, n_train + len(extra)), 4), "teacher_labels": labels}


def mixed_soft_loss(soft, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                    temperature: float, extra_weight: float) -> torch.Tensor:
    """Mean over a batch [B, C] of per-example losses: ``soft`` (alpha-KL + CE) for labelled rows,
    ``extra_weight * T^2 * KL`` for rows labelled NO_LABEL (no gold label, so no CE)."""
    labelled = labels != NO_LABEL  # [B]
    n, n_labelled = labels.numel(), int(labelled.sum())
    loss = student_logits.new_zeros(())
    if n_labelled:
        loss = loss + soft(student_logits[labelled], teacher_logits[labelled], labels[labelled],
                           temperature=temperature) * (n_labelled / n)
    if n_labelled < n:
        t, extra = temperature, ~labelled
        kl = F.kl_div(F.log_softmax(student_logits[extra] / t, dim=-1),
                      F.log_softmax(teacher_logits[extra] / t, dim=-1), reduction="batchmean", log_target=True) * t * t
        loss = loss + extra_weight * kl * ((n - n_labelled) / n)
    return loss
