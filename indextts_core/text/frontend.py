"""The text front-end: raw text -> the text SentencePiece sees, exactly as IndexTTS2 prepares it.

The official front-end (``indextts/utils/front.py`` and ``tokenize_by_CJK_char``) does, in order:

1. routing: the Chinese branch if the text has a CJK ideograph, or no ASCII letter at all (so
   Amharic, Cyrillic, Arabic ... go there too), or is an e-mail address; otherwise the English
   branch unless it contains toned pinyin;
2. WeText text normalisation of that language (numbers, dates, units to words), with toned pinyin,
   ``X·Y`` names and hyphenated tech terms protected, and ``what's``-style contractions expanded;
3. a punctuation map (full-width and other marks to ``, . ! ? ' -``; the Chinese branch also maps ``$``);
4. spaces around every CJK-range character and upper-casing of everything else;
5. NFKC, applied by the tokenizer model's own ``nmt_nfkc`` normaliser.

:class:`TextFrontend` reproduces steps 1-4 (WeText through the ``wetext`` package, the same grammars
the official code uses) and adds a **language normaliser** in front, for languages the official
code does not know.  The Amharic one maps Ethiopic punctuation and the word separator onto the
marks step 3 handles and spells numbers (Arabic and Ethiopic digits) as Amharic words; without
it the Chinese branch would turn "2015" inside Amharic text into Chinese numerals.

The same object prepares text for corpus building, tokenizer mining, preprocessing and synthesis;
its :meth:`TextFrontend.fingerprint` is stored with every tokenizer so a mismatch is caught.
Text for the official inference code: pass it through this front-end first (``indextts-train
normalize``); the official steps leave front-end output unchanged.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

FRONTEND_NAME = "indextts2"
FRONTEND_VERSION = "1"

# ------------------------------------------------------------------ step 4: CJK split + upper-case

# The same character ranges as the official tokenize_by_CJK_char.
_CJK = re.compile(
    "([\u1100-\u11ff\u2e80-\ua4cf\ua840-\ud7af\uf900-\ufaff\ufe30-\ufe4f\uff65-\uffdc\U00020000-\U0002ffff])"
)


def split_cjk(text: str, upper: bool = True) -> str:
    """``"你好 hello 世界"`` -> ``"你 好 HELLO 世 界"``."""
    parts = (p.strip() for p in _CJK.split(text.strip()))
    return " ".join(p.upper() if upper else p for p in parts if p)


# ------------------------------------------------------------------ steps 1-3: the official normaliser

_PUNCT = {
    "：": ",", "；": ",", ";": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": " ", "·": "-", "、": ",",
    "...": "…", ",,,": "…", "，，，": "…", "……": "…", "“": "'", "”": "'", '"': "'", "‘": "'", "’": "'",
    "（": "'", "）": "'", "(": "'", ")": "'", "《": "'", "》": "'", "【": "'", "】": "'", "[": "'", "]": "'",
    "—": "-", "～": "-", "~": "-", "「": "'", "」": "'", ":": ",",
}
_PUNCT_ZH = {"$": ".", **_PUNCT}


def _alternation(mapping: Mapping[str, str]) -> re.Pattern[str]:
    # longest keys first, so "……" wins over "…" prefixes (re alternation takes the first that matches)
    return re.compile("|".join(re.escape(k) for k in sorted(mapping, key=len, reverse=True)))


_PUNCT_RE, _PUNCT_ZH_RE = _alternation(_PUNCT), _alternation(_PUNCT_ZH)
_EMAIL = re.compile(r"^[a-zA-Z0-9]+@[a-zA-Z0-9]+\.[a-zA-Z]+$")
_PINYIN = re.compile(
    r"(?<![a-z])((?:[bpmfdtnlgkhjqxzcsryw]|[zcs]h)?(?:[aeiouüv]|[ae]i|u[aio]|ao|ou|i[aue]|[uüv]e|[uvü]ang?|uai"
    r"|[aeiuv]n|[aeio]ng|ia[no]|i[ao]ng)|ng|er)([1-5])", re.IGNORECASE)
_NAME = re.compile(r"[\u4e00-\u9fff]+(?:[-·—][\u4e00-\u9fff]+){1,2}")
_TECH = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)+")
_CONTRACTION = re.compile(r"(what|where|who|which|how|t?here|it|s?he|that|this)'s", re.IGNORECASE)


def _protect(text: str, pattern: re.Pattern[str], tag: str) -> tuple[str, list[str]]:
    found = sorted({m.group(0) for m in pattern.finditer(text)}, key=len, reverse=True)
    for i, item in enumerate(found):
        text = text.replace(item, f"<{tag}_{chr(ord('a') + i)}>")
    return text, found


def _restore(text: str, items: list[str], tag: str, fix: Callable[[str], str] = lambda s: s) -> str:
    for i, item in enumerate(items):
        text = text.replace(f"<{tag}_{chr(ord('a') + i)}>", fix(item))
    return text


def _correct_pinyin(pinyin: str) -> str:
    """j/q/x + u/ü -> v, upper-cased (``ju4`` -> ``JV4``), as the official normaliser does."""
    if pinyin[0] not in "jqxJQX":
        return pinyin
    return re.sub(r"([jqx])[uü](n|e|an)*(\d)", r"\g<1>v\g<2>\g<3>", pinyin, flags=re.IGNORECASE).upper()


def punctuation_map(text: str) -> str:
    """Step 3 alone (the English branch's map): full-width and other marks to ``, . ! ? ' -``."""
    return _PUNCT_RE.sub(lambda m: _PUNCT[m.group(0)], text)


class OfficialNormalizer:
    """Steps 1-3 of the official front-end (routing, WeText, punctuation map)."""

    @cached_property
    def _wetext(self) -> tuple[Any, Any]:
        from wetext import Normalizer

        return (Normalizer(lang="zh", operator="tn", remove_erhua=False),
                Normalizer(lang="en", operator="tn"))

    @staticmethod
    def use_chinese(text: str) -> bool:
        if re.search(r"[\u4e00-\u9fff]", text) or not re.search(r"[a-zA-Z]", text) or _EMAIL.match(text):
            return True
        return bool(_PINYIN.search(text))

    def normalize(self, text: str) -> str:
        zh, en = self._wetext
        text = _CONTRACTION.sub(r"\1 is", text)
        if self.use_chinese(text):
            text, tech = _protect(text.rstrip(), _TECH, "tech")
            text, pinyin = _protect(text, _PINYIN, "pinyin")
            text, names = _protect(text, _NAME, "n")
            text = zh.normalize(text)
            text = _restore(text, names, "n")
            text = _restore(text, pinyin, "pinyin", _correct_pinyin)
            text = re.sub(r"\s*<tech_([a-z])>\s*", lambda m: f"<tech_{m.group(1)}>", text)
            text = _restore(text, tech, "tech")
            return _PUNCT_ZH_RE.sub(lambda m: _PUNCT_ZH[m.group(0)], text)
        text, tech = _protect(text, _TECH, "tech")
        text = en.normalize(text)
        text = _restore(text, tech, "tech")
        return punctuation_map(text)


# ------------------------------------------------------------------ language normalisers


class LanguageNormalizer(Protocol):
    """Runs before the official steps for one language.  ``version`` changes with its output."""

    language: str
    version: str

    def __call__(self, text: str) -> str: ...


_AM_UNITS = ["", "አንድ", "ሁለት", "ሦስት", "አራት", "አምስት", "ስድስት", "ሰባት", "ስምንት", "ዘጠኝ"]
_AM_TENS = ["", "አሥር", "ሃያ", "ሠላሳ", "አርባ", "ሃምሳ", "ስልሳ", "ሰባ", "ሰማንያ", "ዘጠና"]
_AM_SCALES = [(10**12, "ትሪሊዮን"), (10**9, "ቢሊዮን"), (10**6, "ሚሊዮን"), (10**3, "ሺህ")]
_AM_DIGIT_NAMES = ["ዜሮ"] + _AM_UNITS[1:]


def amharic_number(n: int) -> str:
    """An integer in Amharic words: 2015 -> 'ሁለት ሺህ አሥራ አምስት'."""
    if n == 0:
        return "ዜሮ"
    if n < 0:
        return "ሲቀነስ " + amharic_number(-n)
    words: list[str] = []
    for scale, name in _AM_SCALES:
        if n >= scale:
            count, n = divmod(n, scale)
            words += [amharic_number(count), name]
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words += ([] if hundreds == 1 else [_AM_UNITS[hundreds]]) + ["መቶ"]
    tens, units = divmod(rest, 10)
    if tens == 1 and units:
        words += ["አሥራ", _AM_UNITS[units]]
    else:
        words += [w for w in (_AM_TENS[tens], _AM_UNITS[units]) if w]
    return " ".join(words)


_ETHIOPIC_DIGITS = {chr(0x1369 + i): i + 1 for i in range(9)} | {chr(0x1372 + i): 10 * (i + 1) for i in range(9)}
_ETHIOPIC_HUNDRED, _ETHIOPIC_MYRIAD = "\u137b", "\u137c"
_ETHIOPIC_NUMBER = re.compile("[\u1369-\u137c]+")


def ethiopic_numeral_value(numeral: str) -> int:
    """'፲፱፻፹፭' -> 1985 (digits and tens add up; ፻ multiplies by 100, ፼ by 10000)."""
    total = block = group = 0
    for ch in numeral:
        if ch in _ETHIOPIC_DIGITS:
            group += _ETHIOPIC_DIGITS[ch]
        elif ch == _ETHIOPIC_HUNDRED:
            block, group = (block + (group or 1)) * 100, 0
        elif ch == _ETHIOPIC_MYRIAD:
            total, block, group = (total + block + (group or 1)) * 10000, 0, 0
    return total + block + group


class AmharicNormalizer:
    """Ethiopic punctuation, the word separator, abbreviations and numbers, for Amharic (``am``)."""

    language = "am"
    version = "1"
    PUNCTUATION = {
        "\u1361": " ",  # ፡ word separator
        "\u1362": ".",  # ። full stop
        "\u1363": ",",  # ፣ comma
        "\u1364": ",",  # ፤ semicolon (the official map turns ';' into ',')
        "\u1365": ",",  # ፥ colon
        "\u1366": ",",  # ፦ preface colon
        "\u1367": "?",  # ፧ question mark
        "\u1368": ".",  # ፨ paragraph separator
        "\u1360": " ",  # ፠ section mark
    }
    ABBREVIATIONS = {
        "ዓ.ም.": "ዓመተ ምሕረት", "ዓ.ም": "ዓመተ ምሕረት", "ዓ.ዓ.": "ዓመተ ዓለም", "ት/ቤት": "ትምህርት ቤት",
        "ዶ/ር": "ዶክተር", "ወ/ሮ": "ወይዘሮ", "ወ/ሪት": "ወይዘሪት", "ጠ/ሚ": "ጠቅላይ ሚኒስትር",
    }
    _NUMBER = re.compile(r"\d+(?:[.,]\d+)?%?")

    def _number(self, m: re.Match[str]) -> str:
        token = m.group(0)
        percent = token.endswith("%")
        parts = re.fullmatch(r"(\d+)(?:([.,])(\d+))?", token.rstrip("%"))
        assert parts is not None
        whole, sep, frac = parts.group(1), parts.group(2) or "", parts.group(3) or ""
        if sep == "," and len(frac) == 3:  # 1,000: a thousands separator
            words = amharic_number(int(whole + frac))
        elif sep:
            words = amharic_number(int(whole)) + " ነጥብ " + " ".join(_AM_DIGIT_NAMES[int(d)] for d in frac)
        else:
            words = amharic_number(int(whole))
        return f" {words} በመቶ " if percent else f" {words} "

    def __call__(self, text: str) -> str:
        for abbr, full in self.ABBREVIATIONS.items():
            text = text.replace(abbr, full)
        text = "".join(self.PUNCTUATION.get(ch, ch) for ch in text)
        text = _ETHIOPIC_NUMBER.sub(lambda m: f" {ethiopic_numeral_value(m.group(0))} ", text)
        text = self._NUMBER.sub(self._number, text)
        return re.sub(r"\s+", " ", re.sub(r"\s+([.,?!])", r"\1", text)).strip()


#: Language normalisers by language code; add one with ``NORMALIZERS["xx"] = MyNormalizer``.
NORMALIZERS: dict[str, Callable[[], LanguageNormalizer]] = {"am": AmharicNormalizer}


# ------------------------------------------------------------------ the front-end


@dataclass
class TextFrontend:
    """Raw text of a language -> the text the tokenizer sees (steps 0-4, see the module docstring)."""

    normalizers: dict[str, LanguageNormalizer] = field(
        default_factory=lambda: {lang: make() for lang, make in NORMALIZERS.items()})
    official: OfficialNormalizer = field(default_factory=OfficialNormalizer)

    def __call__(self, text: str, language: str) -> str:
        norm = self.normalizers.get(language.split("-")[0])
        if norm is not None:
            text = norm(text)
        return split_cjk(self.official.normalize(text))

    def official_only(self, text: str) -> str:
        """``text`` as the official front-end alone delivers it (no language normaliser): raw text in its inference."""
        return split_cjk(self.official.normalize(text))

    def encode(self, sp: Any, text: str, language: str) -> list[int]:
        """Token ids as the official tokenizer produces them (one-character inputs skip normalisation)."""
        if not text:
            return []
        if len(text.strip()) == 1:
            return sp.EncodeAsIds(text)
        return sp.EncodeAsIds(self(text, language))

    def spec(self) -> dict[str, Any]:
        from importlib.metadata import PackageNotFoundError, version

        try:
            wetext = version("wetext")
        except PackageNotFoundError:  # pragma: no cover
            wetext = "missing"
        return {
            "name": FRONTEND_NAME, "version": FRONTEND_VERSION, "wetext": wetext,
            "normalizers": {lang: f"{type(n).__name__}/{n.version}" for lang, n in sorted(self.normalizers.items())},
        }

    def fingerprint(self) -> dict[str, Any]:
        """Name, version and a hash of everything that determines the output (stored with tokenizers)."""
        spec = self.spec()
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
        return {"name": spec["name"], "version": spec["version"], "sha256": digest, "spec": spec}
