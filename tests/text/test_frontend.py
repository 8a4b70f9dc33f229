"""The text front-end: the official steps reproduced, and the Amharic normaliser in front."""

from __future__ import annotations

import pytest

from indextts_core.text.frontend import (
    AmharicNormalizer,
    OfficialNormalizer,
    TextFrontend,
    amharic_number,
    ethiopic_numeral_value,
    split_cjk,
)


@pytest.fixture(scope="module")
def fe() -> TextFrontend:
    return TextFrontend()


def test_cjk_split_and_upper_case_like_the_official_example():
    assert split_cjk("你好世界是 hello world 的中文") == "你 好 世 界 是 HELLO WORLD 的 中 文"
    assert split_cjk("안녕 こんにちは Xin chào") == "안 녕 こ ん に ち は XIN CHÀO"


@pytest.mark.parametrize(("text", "chinese"), [
    ("你好 world", True), ("ሰላም ነው", True), ("Привет", True), ("user@example.com", True),
    ("please say xuan4 now", True), ("hello world", False), ("ሰላም OK", False),
])
def test_routing(text: str, chinese: bool):
    assert OfficialNormalizer.use_chinese(text) is chinese


def test_english_branch(fe: TextFrontend):
    assert fe("She sold 312 tickets yesterday.", "en") == "SHE SOLD THREE HUNDRED AND TWELVE TICKETS YESTERDAY."
    assert fe("What's new? (nothing)", "en") == "WHAT IS NEW? 'NOTHING'"
    assert fe("The GPT-5 model: great; cheap", "en") == "THE GPT-5 MODEL, GREAT, CHEAP"


def test_chinese_branch(fe: TextFrontend):
    assert fe("他有312个苹果。", "zh") == "他 有 三 百 一 十 二 个 苹 果 ."
    assert fe("“你好”，我叫克里斯托弗·诺兰！", "zh") == "' 你 好 ', 我 叫 克 里 斯 托 弗 - 诺 兰 !"
    assert fe("请读 xuan4 和 ju4", "zh") == "请 读 XVAN4 和 JV4"  # the official pinyin correction


def test_amharic_numbers_stay_amharic(fe: TextFrontend):
    # through the official steps alone, the Chinese branch would spell 2015 with Chinese numerals
    out = fe("በ2015 ዓ.ም. ከዩኒቨርሲቲ ተመረቀ።", "am")
    assert out == "በ ሁለት ሺህ አሥራ አምስት ዓመተ ምሕረት ከዩኒቨርሲቲ ተመረቀ."
    assert not any("\u4e00" <= ch <= "\u9fff" for ch in out)
    assert fe("ዋጋው 3.5% ነው፧", "am") == "ዋጋው ሦስት ነጥብ አምስት በመቶ ነው?"
    assert fe("በ፲፱፻፹፭ 1,000 ሰዎች", "am") == "በ አንድ ሺህ ዘጠኝ መቶ ሰማንያ አምስት አንድ ሺህ ሰዎች"


def test_amharic_punctuation_and_word_separator(fe: TextFrontend):
    assert fe("ሰላም፡ለዚህ፡ቤት።", "am") == "ሰላም ለዚህ ቤት."
    assert fe("አባቴ ገበሬ ነው፤ እናቴ፣ ደግሞ፦ መምህርት ናት፨", "am") == "አባቴ ገበሬ ነው, እናቴ, ደግሞ, መምህርት ናት."
    assert fe("ዶ/ር አበበ ወደ ት/ቤት ሄዱ", "am") == "ዶክተር አበበ ወደ ትምህርት ቤት ሄዱ"


def test_mixed_scripts(fe: TextFrontend):
    # Latin inside Amharic: the English branch runs (and upper-cases); numbers were already Amharic words
    assert fe("ሰላም ok 2 ጊዜ", "am") == "ሰላም OK ሁለት ጊዜ"
    # Ge'ez next to Chinese: CJK characters split apart, Ge'ez left whole
    assert fe("ሰላም 你好", "am") == "ሰላም 你 好"


def test_front_end_output_is_stable_under_the_official_steps(fe: TextFrontend):
    """Prepared text can go to the official inference code, whose front-end leaves it unchanged."""
    for text, lang in (("በ2015 ዓ.ም. ተመረቀ።", "am"), ("She sold 312 tickets.", "en"), ("他有312个苹果。", "zh")):
        once = fe(text, lang)
        assert split_cjk(fe.official.normalize(once)) == once


@pytest.mark.parametrize(("n", "words"), [
    (0, "ዜሮ"), (7, "ሰባት"), (10, "አሥር"), (11, "አሥራ አንድ"), (19, "አሥራ ዘጠኝ"), (20, "ሃያ"), (21, "ሃያ አንድ"),
    (99, "ዘጠና ዘጠኝ"), (100, "መቶ"), (101, "መቶ አንድ"), (250, "ሁለት መቶ ሃምሳ"), (1000, "አንድ ሺህ"),
    (2015, "ሁለት ሺህ አሥራ አምስት"), (10_000, "አሥር ሺህ"), (3_000_000, "ሦስት ሚሊዮን"),
])
def test_amharic_number_words(n: int, words: str):
    assert amharic_number(n) == words


def test_ethiopic_numerals():
    assert [ethiopic_numeral_value(x) for x in ("፩", "፲", "፲፱", "፻", "፲፱፻፹፭", "፳፻፲፭", "፼")] == \
        [1, 10, 19, 100, 1985, 2015, 10000]


def test_single_character_inputs_skip_normalisation_like_the_official_tokenizer(fe: TextFrontend, tiny_tokenizer):
    sp = tiny_tokenizer
    assert fe.encode(sp, "a", "en") == sp.EncodeAsIds("a")  # lower case, not "A"
    assert fe.encode(sp, "ab", "en") == sp.EncodeAsIds("AB")
    assert fe.encode(sp, "", "en") == []


def test_fingerprint_follows_the_normalisers():
    base = TextFrontend().fingerprint()
    assert base == TextFrontend().fingerprint() and len(base["sha256"]) == 64

    class Newer(AmharicNormalizer):
        version = "2"

    assert TextFrontend(normalizers={"am": Newer()}).fingerprint()["sha256"] != base["sha256"]
