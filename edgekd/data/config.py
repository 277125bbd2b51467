from pydantic import Field, model_validator

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
