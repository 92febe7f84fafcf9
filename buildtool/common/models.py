"""The one base of every pydantic model the tool reads files into.

Unknown keys are errors everywhere: a misspelt key in a spec, or a field that a newer
tool wrote into a record, is reported rather than silently dropped. Types are strict
too (no "1" for 1, no 1 for "1"), except where a model says why it relaxes them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """The one strict base of every schema: unknown keys and loose types are errors."""

    model_config = ConfigDict(extra="forbid", strict=True)
