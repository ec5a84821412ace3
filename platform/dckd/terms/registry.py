"""Every loss term by name, and the method presets as lists of term names.

Adding a term to the platform is one module in ``dckd/terms/`` and one line in ``BUILT_IN``;
the config's ``method`` section, the step, checkpoints and logs pick it up from here. A term
in another package registers itself with an entry point in the group ``dckd.terms``
(``toy = "my_package.toy:Toy"``). The order of ``TERMS`` is the order terms plan, compute and
log, so it is part of what makes a run reproducible: new terms go at the end.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from dckd.terms.base import Term
from dckd.terms.dcr import DCR
from dckd.terms.dmm import DMM
from dckd.terms.dukd import DUKD
from dckd.terms.fakd import FAKD
from dckd.terms.kd import KD
from dckd.terms.lcr import LCR
from dckd.terms.mclir import MCLIR
from dckd.terms.mipkd import MiPKD
from dckd.terms.rec import Rec

BUILT_IN: tuple[type[Term], ...] = (Rec, KD, DCR, DMM, LCR, FAKD, MiPKD, DUKD, MCLIR)

ENTRY_POINT_GROUP = "dckd.terms"


def _discover() -> dict[str, type[Term]]:
    terms: dict[str, type[Term]] = {cls.name: cls for cls in BUILT_IN}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Term)):
            raise TypeError(f"entry point {ep.name} = {ep.value} ({ENTRY_POINT_GROUP}) is not a dckd Term class")
        if cls.name != ep.name or cls.name in terms:
            raise TypeError(f"entry point {ep.name} = {ep.value}: name {cls.name!r} clashes or differs")
        terms[cls.name] = cls
    return terms


#: Every loss term, in the order they are planned, computed and logged.
TERMS: dict[str, type[Term]] = _discover()

#: Method presets: the terms each turns on (a config may switch any term on or off itself).
METHOD_PRESETS: dict[str, tuple[str, ...]] = {
    "scratch": ("rec",),
    "logits": ("rec", "kd"),
    "dckd": ("rec", "kd", "dcr", "dmm"),
    "dckd_release": ("rec", "kd", "dcr", "dmm", "lcr"),
    "dckd_star": ("rec", "kd", "dcr", "dmm", "lcr", "dukd"),
    "fakd": ("rec", "kd", "fakd"),
    "mipkd": ("rec", "kd", "mipkd"),
    "dukd": ("rec", "kd", "dukd"),
    "mclir": ("rec", "mclir"),
}

#: The switches (paths inside ``method``) that make a step compute what the authors' release
#: computes, with their short names. Each defaults to the paper as written; ``dckd_release``
#: turns all of them on.
RELEASE_SWITCHES: dict[str, str] = {
    "dmm.released_double_softmax": "double-softmax DMM",
    "dcr.degradation.released_shared_gray_noise": "shared grey noise",
    "dcr.degradation.released_unclamped_resize": "unclamped resize",
}
#: Switch values a preset sets unless the config gives them itself.
PRESET_SWITCHES: dict[str, dict[str, bool]] = {"dckd_release": dict.fromkeys(RELEASE_SWITCHES, True)}
