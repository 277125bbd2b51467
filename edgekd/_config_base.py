"""Shared base for every typed config: unknown keys are errors, defaults live in the field."""

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_serializer


class StrictModel(BaseModel):
    """A pydantic model that rejects unknown keys and re-validates on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)
    # Fields left out of model_dump while they hold this value: settings of one task family (a stage's
    # `lm:` section) stay out of the other family's dumps, so its cache keys do not change when they arrive.
    _omit_if: ClassVar[dict[str, Any]] = {}

    @model_serializer(mode="wrap")
    def _omit_unset_family_fields(self, handler):
        data = handler(self)
        if isinstance(data, dict):
            # Every class's own _omit_if counts (a subclass's entries add to its bases', never replace them).
            omit = {k: v for cls in reversed(type(self).__mro__) for k, v in vars(cls).get("_omit_if", {}).items()}
            for name, value in omit.items():
                if name in data and getattr(self, name) == value:
                    del data[name]
        return data
