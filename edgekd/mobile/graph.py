"""The PyTorch student as a graph that on-device exporters (ExecuTorch, LiteRT) can trace, and shared helpers.

Why a wrapper instead of the Hugging Face forward: both exporters need the attention mask as a plain tensor
computation. transformers' own 2-D mask path breaks pt2e quantization (``IndexError: tensors used as indices must be
long``) and ``BertModel.forward`` refuses a ready 4-D mask, so the wrapper calls embeddings -> encoder -> pooler ->
classifier itself with the additive mask built explicitly. Logits match the Hugging Face model to ~1e-6, padded or not.

Both exporters take (input_ids, attention_mask), batch 1; example inputs must be two *distinct* tensors: the same
tensor object passed twice is traced as one graph input, and the file then runs silently wrong.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgekd.errors import ConfigError

# Families whose classifier is ``classifier(pooler(encoder(...)))`` with BERT's module names.
SUPPORTED = ("bert",)


def missing_library(what: str, extra: str, exc: ImportError) -> ConfigError:
    """The one-line error for an on-device target whose library is not installed."""
    return ConfigError(f"{what} needs {exc.name or 'a library'} (not installed); install it with "
                       f'pip install "edgekd[{extra}]"')


def exportable(model_dir: Path):
    """The classifier in ``model_dir`` (pruned layouts included) wrapped as (ids, mask) -> logits [1, classes].

    Loaded with eager attention: the same arithmetic in every exporter, and no SDPA mask conversion in the graph.
    """
    import torch

    from edgekd.models import load_classifier

    model = load_classifier(str(model_dir), attn_implementation="eager").eval()
    if model.config.model_type not in SUPPORTED:
        raise ConfigError(f"{model_dir}: the executorch and litert targets convert {', '.join(SUPPORTED)} "
                          f"classifiers; this model is {model.config.model_type!r}")

    class Exportable(torch.nn.Module):
        def __init__(self, classifier):
            super().__init__()
            self.classifier = classifier

        def forward(self, input_ids, attention_mask):  # both [1, seq] integers
            bert = self.classifier.bert
            # [1, 1, 1, seq]: 0 where attended, -1e4 on padding (exp(-1e4) is 0 in fp32 softmax)
            additive = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -1e4
            hidden = bert.embeddings(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids))
            hidden = bert.encoder(hidden, attention_mask=additive)[0]  # [1, seq, hidden]
            return self.classifier.classifier(bert.pooler(hidden))  # [1, classes] (dropout: eval, a no-op)

    return Exportable(model).eval()


def example_inputs(length: int, dtype=None) -> tuple:
    """(input_ids, attention_mask) [1, length]: two distinct tensors (one tensor twice would become one input)."""
    import torch

    dtype = dtype or torch.long
    return torch.ones(1, length, dtype=dtype), torch.ones(1, length, dtype=dtype)


def padded(ids: Sequence[int], length: int, pad_id: int, dtype=np.int64) -> tuple[np.ndarray, np.ndarray]:
    """One text as ids and mask [1, length]: padded with ``pad_id`` and mask 0 past the text."""
    if len(ids) > length:
        raise ValueError(f"{len(ids)} tokens do not fit in {length}")
    x = np.full((1, length), pad_id, dtype=dtype)
    m = np.zeros((1, length), dtype=dtype)
    x[0, : len(ids)] = ids
    m[0, : len(ids)] = 1
    return x, m

