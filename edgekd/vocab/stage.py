"""Pipeline adapter: trim the model's vocabulary to the selection splits' tokens and prove nothing changed.

The trimmed model is written under the same artifact name, so export, quantize, bundle and bench
use it (and its own tokenizer folder) from here on.
"""

import logging

from edgekd.data.tokenize import encode
from edgekd.errors import ConfigError, DataError, ParityError
from edgekd.models import load_classifier, load_tokenizer, save_classifier
from edgekd.models.io import LAYOUT_KEY
from edgekd.stage_context import StageContext
from edgekd.vocab.config import VocabConfig
from edgekd.vocab.core import check_identical_tokenisation, kept_token_ids, max_logit_difference, trim_vocabulary

log = logging.getLogger(__name__)
LOGIT_CHECK_TEXTS = 256  # validation texts run through both models
LOGIT_TOLERANCE = 1e-4  # same rows, same ids up to the remap: the logits agree to float rounding


def _split_texts(ctx: StageContext, name: str) -> list[str]:
    if name != "unlabelled":
        return ctx.splits[name].texts
    texts = list(getattr(ctx.splits, "unlabelled", None) or [])  # a pool of texts, not a labelled split
    if not texts:
        raise DataError("vocab texts: this run's data has no unlabelled texts (see data.unlabelled_labels); "
                        "select train and/or validation")
    return texts


def run(cfg: VocabConfig, ctx: StageContext) -> None:
    src = ctx.artifact(cfg.model)
    if src.type != "hf-model":
        raise ConfigError(f"vocab model: {cfg.model!r} is a {src.type} artifact; trimming needs a Hugging Face model "
                          "(teacher or student)")
    model = load_classifier(str(src.path))
    tokenizer = load_tokenizer(str(src.tokenizer or src.path))
    selection = {name: _split_texts(ctx, name) for name in cfg.texts}
    keep = kept_token_ids(tokenizer, [text for texts in selection.values() for text in texts], cfg)
    trimmed, new_tokenizer, report = trim_vocabulary(model, tokenizer, keep)

    identical = {}
    for name, texts in selection.items():
        counts = check_identical_tokenisation(tokenizer, new_tokenizer, report.old_to_new, texts, ctx.max_length)
        if counts["first_mismatch"] is not None:
            raise DataError(f"vocab: text {counts['first_mismatch']} of the {name} split tokenises differently after "
                            "trimming, although its tokens were kept")
        identical[name] = 1.0
    # Measured, never selected from: how much unseen text still meets exactly its old tokens.
    test = check_identical_tokenisation(tokenizer, new_tokenizer, report.old_to_new, ctx.splits.test.texts,
                                        ctx.max_length)
    identical["test"] = test["identical"] / max(test["texts"], 1)

    sample = ctx.splits.validation.texts[:LOGIT_CHECK_TEXTS]
    diff = max_logit_difference(model, trimmed, encode(tokenizer, sample, ctx.max_length),
                                encode(new_tokenizer, sample, ctx.max_length), tokenizer.pad_token_id)
    if diff > LOGIT_TOLERANCE:
        raise ParityError(f"vocab: trimmed model's logits differ from the original's by {diff:.2e} on validation "
                          f"texts (tolerance {LOGIT_TOLERANCE})")
    log.info("vocab: %d -> %d tokens; test texts tokenised identically %.1f%%; max |logit diff| %.1e",
             report.tokens_before, report.tokens_after, 100 * identical["test"], diff)

    ctx.metrics.update(
        tokens_before=report.tokens_before, tokens_after=report.tokens_after,
        embedding_bytes_before=report.embedding_bytes_before, embedding_bytes_after=report.embedding_bytes_after,
        embedding_bytes_saved=report.embedding_bytes_before - report.embedding_bytes_after,
        identical_share=identical, test_texts_changed=test["texts"] - test["identical"],
        logits_max_abs_diff=diff, logit_check_texts=len(sample), selection=list(cfg.texts))
    save_classifier(trimmed, new_tokenizer, ctx.add_output(
        cfg.model, "hf-model", "model", role=src.role, source=src.source, precision=src.precision,
        runtime=src.runtime, tokenizer="model", pad_id=new_tokenizer.pad_token_id, task=src.task,
        vocab_trimmed_from=report.tokens_before), layout=getattr(trimmed.config, LAYOUT_KEY, None))
