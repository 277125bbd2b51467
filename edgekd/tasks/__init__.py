"""Task families: what differs between training a classifier and a language model, as one object.

The runner and the stages ask the task how to read and split the data, load and save the model, train
and score it, and which validation metric picks a checkpoint; everything else (the cache, the run
directory, artifacts, bench and report) is shared. A new family is one module here plus its entry in
TASKS.
"""

from edgekd.tasks.base import Task


def get_task(name: str) -> Task:
    """The task object for a pipeline's `task` (imported lazily: the LM task pulls in its own modules)."""
    if name == "text-classification":
        from edgekd.tasks.classification import ClassificationTask

        return ClassificationTask()
    if name == "causal-lm":
        from edgekd.tasks.causal_lm import CausalLMTask

        return CausalLMTask()
    raise ValueError(f"unknown task {name!r}")


__all__ = ["Task", "get_task"]
