"""The ``method`` section: one subsection per registered loss term, and a preset that turns terms on.

Built from ``dckd.terms.registry``, so the list of terms is written once: a new term's config
appears here, in ``--set method.<term>.*`` and in the docs without touching this file.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, create_model, model_validator

from dckd.config.base import Strict, TermConfig
from dckd.terms.registry import METHOD_PRESETS, PRESET_SWITCHES, RELEASE_SWITCHES, TERMS

#: Every loss term, in the order they are planned, computed and logged.
TERM_NAMES: tuple[str, ...] = tuple(TERMS)
#: Terms that compare the student with a teacher.
TEACHER_TERMS: tuple[str, ...] = tuple(n for n, t in TERMS.items() if t.needs_teacher)
#: Terms that read the VQGAN encoder.
ENCODER_TERMS: tuple[str, ...] = tuple(n for n, t in TERMS.items() if t.needs_encoder)
#: Method presets as term lists (the registry's).
METHOD_TERMS = METHOD_PRESETS
MethodPreset = Literal[tuple(METHOD_PRESETS)]  # type: ignore[valid-type]


class _MethodBase(Strict):
    """A distillation method as weighted loss terms; ``preset`` says which are on by default."""

    @model_validator(mode="before")
    @classmethod
    def _preset_switches(cls, data: Any) -> Any:
        """A preset's switch values (``PRESET_SWITCHES``) fill what the config leaves unset."""
        switches = PRESET_SWITCHES.get(data.get("preset", "dckd"), {}) if isinstance(data, dict) else {}
        if not switches:
            return data
        data = dict(data)
        for dotted, value in switches.items():
            *path, leaf = dotted.split(".")
            node = data
            for part in path:
                child = node.get(part)
                if isinstance(child, BaseModel):  # a section passed as a model: keep what it set
                    child = child.model_dump(exclude_unset=True)
                if child is None:
                    child = {}
                if not isinstance(child, dict):
                    break  # not a mapping: field validation refuses it with its path
                node[part] = node = dict(child)  # copies: the caller's dicts stay as they were
            else:
                node.setdefault(leaf, value)
        return data

    @model_validator(mode="after")
    def _fill_enabled(self) -> Any:
        on = METHOD_TERMS[self.preset]  # type: ignore[attr-defined]
        for name in TERM_NAMES:
            term = self.term(name)
            if term.enabled is None:
                object.__setattr__(term, "enabled", name in on)
        if not any(self.term(n).enabled for n in TERM_NAMES):
            raise ValueError("every loss term is disabled: nothing to train")
        return self

    def term(self, name: str) -> TermConfig:
        return getattr(self, name)

    @property
    def enabled_terms(self) -> list[str]:
        return [n for n in TERM_NAMES if self.term(n).enabled]

    @property
    def needs_teacher(self) -> bool:
        return any(self.term(n).enabled for n in TEACHER_TERMS)

    @property
    def needs_vqgan(self) -> bool:
        return any(self.term(n).enabled for n in ENCODER_TERMS)

    def switch(self, dotted: str) -> bool:
        """The value of a switch named by its path inside ``method`` (see ``RELEASE_SWITCHES``)."""
        node: Any = self
        for part in dotted.split("."):
            node = getattr(node, part)
        return bool(node)

    @property
    def release_switches(self) -> dict[str, bool]:
        return {name: self.switch(name) for name in RELEASE_SWITCHES}


MethodConfig = create_model(  # type: ignore[call-overload]
    "MethodConfig",
    __base__=_MethodBase,
    __module__=__name__,
    __doc__=_MethodBase.__doc__,
    preset=(MethodPreset, "dckd"),
    **{name: (term.config, Field(default_factory=term.config)) for name, term in TERMS.items()},
)
