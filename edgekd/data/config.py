from pydantic import Field, field_validator, model_validator

from edgekd._config_base import StrictModel


class DataConfig(StrictModel):
    """Where the labelled text comes from and how it is split."""

    source: str = Field(
        "builtin:rotten-tomatoes",
        description="builtin:NAME, a local .csv/.tsv/.jsonl/.json/.parquet file (optionally .bz2/.gz), or hub:NAME",
    )
    text_column: str = Field("text", min_length=1, description="column holding the text")
    label_column: str = Field("label", min_length=1, description="column holding the label (string or integer)")
    drop_labels: list[str] = Field(default_factory=list, description="label values whose rows are dropped")
    unlabelled_labels: list[str] = Field(
        default_factory=list,
        description="label values whose rows are kept as unlabelled text (an 'unlabelled' pool next to the splits, "
        "never trained on with a label nor evaluated); distill.extra_data.unlabelled lets the teacher label them",
    )
    hub_split: str = Field("train", description="split read from a hub dataset (hub: sources only)")
    validation_fraction: float = Field(0.1, gt=0.0, lt=0.5, description="share of unique texts held out for validation")
    test_fraction: float = Field(0.15, gt=0.0, lt=0.5, description="share of unique texts held out for test")
    max_train_examples: int | None = Field(None, ge=2, description="cap on training examples (None: all)")

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> "DataConfig":
        if self.validation_fraction + self.test_fraction >= 0.8:
            raise ValueError("validation_fraction + test_fraction must stay below 0.8")
        return self

    @model_validator(mode="after")
    def _labels_are_dropped_or_unlabelled_not_both(self) -> "DataConfig":
        both = sorted(set(self.drop_labels) & set(self.unlabelled_labels))
        if both:
            raise ValueError(f"label(s) {both} are in both data.drop_labels and data.unlabelled_labels; a label's rows "
                             "are either dropped or kept unlabelled: list each in one of them")
        return self


class TextDataConfig(StrictModel):
    """Plain text for a causal language model: documents split whole into train / validation / test.

    Training and evaluation read the documents as one token stream (an EOS token after each document)
    cut into windows of model.max_length tokens.
    """

    source: str = Field(
        "builtin:bbc-news",
        description="builtin:NAME, a folder of .txt files (one document per file, read recursively), one .txt file "
        "(one document), or a .jsonl/.json/.csv/.tsv/.parquet file with one document per row in text_column",
    )
    text_column: str = Field("text", min_length=1, description="column holding the text (table files only)")
    fallback_encoding: str | None = Field(
        None, min_length=1, description="encoding for a .txt file that is not valid UTF-8 (e.g. cp1252: the BBC "
        "corpus has one such file); None: such a file stops the run, naming it and the line")
    validation_fraction: float = Field(0.1, gt=0.0, lt=0.5, description="share of documents held out for validation")
    test_fraction: float = Field(0.1, gt=0.0, lt=0.5, description="share of documents held out for test")
    max_train_documents: int | None = Field(None, ge=1, description="cap on training documents (None: all)")
    separator_token: str | None = Field(
        None, min_length=1, description="token put after every document in the token stream (None: the tokenizer's "
        "EOS). Chat models end a turn with their EOS (SmolLM2-Instruct: <|im_end|>); their pretraining separator "
        "(<|endoftext|>) fits plain articles better")
    validation_windows: int | None = Field(
        64, ge=1, description="validation windows (model.max_length tokens each, evenly spaced over the split) that "
        "score each epoch and each stage; a causal LM's forward pass is costly on a CPU (None: all)")

    @field_validator("source")
    @classmethod
    def _no_hub_text(cls, source: str) -> str:
        if source.startswith("hub:"):
            raise ValueError("hub datasets are not supported for causal-lm text yet; use builtin:bbc-news, a folder of "
                             ".txt files, a .txt file or a .jsonl/.csv/.parquet file")
        return source

    @model_validator(mode="after")
    def _encoding_exists(self) -> "TextDataConfig":
        import codecs

        if self.fallback_encoding is not None:
            try:
                codecs.lookup(self.fallback_encoding)
            except LookupError:
                raise ValueError(f"fallback_encoding: unknown encoding {self.fallback_encoding!r}; e.g. cp1252, "
                                 "latin-1, utf-16") from None
        return self

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> "TextDataConfig":
        if self.validation_fraction + self.test_fraction >= 0.8:
            raise ValueError("validation_fraction + test_fraction must stay below 0.8")
        return self
