"""Language codes: checked against ISO 639 (``pycountry``'s tables), written one way.

Every code the pipeline meets (the run's ``language``, a manifest's default, each row's) goes
through :func:`canonical_language`: an ISO 639-1 code stays as it is, an ISO 639-3 code with a
two-letter equivalent becomes that (``amh`` -> ``am``, so the Amharic normaliser applies), a
region or script tag is kept (``pt-BR``).  Anything else is an error that names the likely choices;
a language outside ISO 639 is allowed only when it is listed explicitly (``extra_languages``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from functools import lru_cache

from indextts_core.errors import InputError


class UnknownLanguage(InputError):
    """A language code that is not ISO 639-1/639-3 and not listed as an extra language."""


@lru_cache(maxsize=1)
def _tables() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(canonical code -> name, alpha-3 -> canonical code, lower-case name -> canonical code)."""
    import pycountry

    named, three, names = {}, {}, {}
    for lang in pycountry.languages:
        code = getattr(lang, "alpha_2", None) or lang.alpha_3
        three[lang.alpha_3] = code
        named[code] = lang.name
        names.setdefault(lang.name.lower(), code)
    return named, three, names


def _suggestions(code: str) -> list[str]:
    named, _, names = _tables()
    lowered = code.lower()
    out = [names[lowered]] if lowered in names else []
    out += difflib.get_close_matches(lowered, [c for c in named if len(c) == 2], n=3, cutoff=0.5)
    out += [names[n] for n in difflib.get_close_matches(lowered, list(names), n=3, cutoff=0.75)]
    return list(dict.fromkeys(f"{c} ({named[c]})" for c in out))[:5]


def canonical_language(code: str, extra: Iterable[str] = ()) -> str:
    """The one spelling of ``code`` the pipeline uses; :class:`UnknownLanguage` if it is not a language."""
    text = str(code).strip()
    extra = set(extra)
    if text in extra:
        return text
    base, sep, rest = text.partition("-")
    base = base.lower()
    named, three, _ = _tables()
    if len(base) == 2 and base in named:
        canon = base
    elif len(base) == 3 and base in three:
        canon = three[base]
    else:
        hint = _suggestions(base)
        raise UnknownLanguage(
            f"{text!r} is not an ISO 639-1 or 639-3 language code"
            + (f"; did you mean {', '.join(hint)}?" if hint else "")
            + ". A language outside ISO 639 can be used when listed in extra_languages")
    return canon + (sep + rest if rest else "")


def whisper_language(language: str) -> str:
    """Whisper's code for a language: its ISO 639-1 code (the part before a region: ``pt-BR`` -> ``pt``)."""
    return language.split("-")[0].split("_")[0].lower()


def iso639_3(language: str) -> str:
    """The ISO 639-3 code of a language (``am`` -> ``amh``, ``pt-BR`` -> ``por``); MMS names its adapters so."""
    base = whisper_language(language)
    _, three, _ = _tables()
    if len(base) == 3 and base in three:
        return base
    for alpha3, canon in three.items():
        if canon == base:
            return alpha3
    return base
