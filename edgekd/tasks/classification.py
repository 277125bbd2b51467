"""Text classification: labelled texts, an encoder with a classification head, accuracy selects."""

from pathlib import Path

from edgekd.data.config import DataConfig
from edgekd.train import ACCURACY  # (edgekd.train imports torch: this module loads only when a task is used)


class ClassificationTask:
    name = "text-classification"
    selection = ACCURACY
    export_task = "text-classification"

    def resolve_data(self, source: str):
        from edgekd.assets import resolve_dataset_file

        return resolve_dataset_file(source)

    def prepare_data(self, data_cfg: DataConfig, source, seed: int):
        from edgekd.data import make_splits, read_labelled_text

        pairs = read_labelled_text(source, data_cfg.text_column, data_cfg.label_column, data_cfg.drop_labels,
                                   data_cfg.hub_split)
        splits = make_splits(pairs, data_cfg.validation_fraction, data_cfg.test_fraction, seed,
                             data_cfg.max_train_examples, where=data_cfg.source,
                             unlabelled_labels=data_cfg.unlabelled_labels)
        sizes = {name: len(splits[name]) for name in ("train", "validation", "test")}
        per_class = {name: [splits[name].labels.count(i) for i in range(len(splits.label_names))] for name in sizes}
        metrics = {"sizes": sizes, "per_class": per_class, "label_names": splits.label_names,
                   "unlabelled": len(splits.unlabelled)}
        line = (f"{sizes['train']} train / {sizes['validation']} validation / {sizes['test']} test examples, "
                f"classes {splits.label_names}, {len(splits.unlabelled)} unlabelled texts")
        return splits, metrics, line

    def save_splits(self, splits, folder: Path) -> None:
        from edgekd.data import save_splits

        save_splits(splits, folder)

    def load_splits(self, folder: Path):
        from edgekd.data.split import load_splits

        return load_splits(folder)

    def load_for_training(self, source: str, splits, finetune: bool):
        from edgekd.models import load_classifier, load_tokenizer
        from edgekd.preflight import check_head_fits_labels

        tokenizer = load_tokenizer(source)
        if finetune:
            return load_classifier(source, label_names=splits.label_names), tokenizer
        # Used as given, the head must already mean the data's labels: never a new (random) or reordered head.
        # Preflight checked local folders; this also covers hub models, only here once downloaded.
        model = load_classifier(source)
        check_head_fits_labels(Path(source), model.config, None, splits.label_names)
        return model, tokenizer

    def finetune(self, model, tokenizer, splits, cfg, seed: int, max_length: int, device):
        from edgekd.teacher.core import finetune

        return finetune(model, tokenizer, splits, cfg, seed, max_length, device)

    def validate(self, model, tokenizer, splits, max_length: int) -> dict[str, float]:
        from edgekd.evaluate import evaluate

        return evaluate(model, tokenizer, splits.validation, len(splits.label_names), max_length)

    def save(self, model, tokenizer, folder: Path) -> None:
        from edgekd.models import save_classifier

        save_classifier(model, tokenizer, folder)
