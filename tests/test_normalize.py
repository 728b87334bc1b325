import pytest

from pipeline.text.normalize import normalize, normalize_term


@pytest.mark.parametrize("disguised", [
    "赌博", "賭博", "赌*博", "赌 博", "赌\u200b博", "赌赌赌博博", "賭-_-博", "赌。博",
])
def test_disguises_meet_the_term(disguised):
    assert normalize(disguised).text == normalize_term("赌博") == "赌博"


def test_width_case_and_circled_digits():
    assert normalize("ＶＩＰ会员 Free").text == "vip会员fre"  # ee collapses, like the term would
    assert normalize_term("free") == "fre"
    assert normalize("①②③").text == "123"


def test_digits_are_not_collapsed():
    assert normalize("138 0013 8000").text == "13800138000"


def test_span_points_into_the_original():
    original = "今天有人说 賭 * 博 网站"
    n = normalize(original)
    start = n.text.index("赌博")
    s, e = n.span(start, start + 2)
    assert original[s:e] == "賭 * 博"


def test_huge_and_control_character_text():
    text = ("\x00\x01\x02刷屏" * 100_000)[:1_000_000]
    n = normalize(text)
    assert n.text.startswith("刷屏刷屏") and len(n.offsets) == len(n.text)


def test_fast_fold_equals_normalize_on_simulated_chatter():
    from pipeline.devtools.simulate import Simulator
    from pipeline.text.normalize import fold

    sim = Simulator(seed=9)
    texts = [e.get("text", "") for e in sim.events(3000)] + ["賭 * 博", "ＶＩＰ①②", "哈哈哈哈!!!", "a\u200bb", "11223"]
    for t in texts:
        assert fold(t) == normalize(t).text, t
