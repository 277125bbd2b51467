from typing import Literal

from pydantic import Field

from edgekd._config_base import StrictModel


class VocabConfig(StrictModel):
    """Trim the student's vocabulary to the tokens the task's text uses (WordPiece tokenizers only).

    The embedding rows of the kept tokens are copied in id order and the tokenizer gets the same ids,
    so every text of the selection splits tokenises to the same tokens and the logits do not change.
    """

    kind: Literal["vocab"] = "vocab"
    model: str = Field("student", min_length=1, description="hf-model artifact to trim (a teacher or student); "
                       "the trimmed model replaces it under the same name for the stages after this one")
    texts: list[Literal["train", "validation", "unlabelled"]] = Field(
        default_factory=lambda: ["train", "validation"], min_length=1,
        description="splits whose texts define the kept vocabulary; the test split is never used for selection "
                    "(the stage only reports how much of it tokenises identically)")
    keep_characters: bool = Field(
        True, description="also keep every single-character token and its ## continuation, so words outside the "
                          "kept vocabulary still tokenise into pieces instead of [UNK]")
    extra_tokens: int = Field(
        0, ge=0, le=1_000_000,
        description="further tokens kept beyond those used, lowest ids first; in BERT vocabularies ids from ~2000 "
                    "on are roughly in frequency order (below that lie [unusedN] placeholders, which are skipped, "
                    "and single characters)")
    max_vocab: int | None = Field(None, ge=8, le=10_000_000,
                                  description="hard cap on the trimmed vocabulary size; more kept tokens is an error")

    @staticmethod
    def summary(m: dict) -> str:
        saved = m["embedding_bytes_before"] - m["embedding_bytes_after"]
        return (f"{m['tokens_before']} → {m['tokens_after']} tokens, {saved / 1e6:.1f} MB of fp32 embeddings saved; "
                f"test texts tokenised identically {m['identical_share']['test']:.1%}")

    def requires(self) -> list[str]:
        return [self.model]

    def provides(self) -> list[str]:
        return [self.model]
