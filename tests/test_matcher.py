from pipeline.text.matcher import Matcher, Term

LEXICON = [
    Term("赌博", "gambling", "high"),
    Term("百家乐", "gambling", "high"),
    Term("口交", "porn", "high", boundary=True),
    Term("黄色", "porn", "medium", boundary=True),
    Term("代开发票", "fraud", "high"),
]
ALLOW = ["黄色预警", "黄色信号"]


def _terms(text: str) -> list[str]:
    return [m.term.term for m in Matcher(LEXICON, ALLOW).find(text)]


def test_disguised_terms_match_with_their_original_span():
    text = "有人在群里说 賭 * 博 的事"
    [m] = Matcher(LEXICON, ALLOW).find(text)
    assert m.term.category == "gambling" and text[m.start:m.end] == "賭 * 博" and m.normalized == "赌博"
    assert _terms("代 开 发 票，百.家.乐") == ["代开发票", "百家乐"]
    assert _terms("ＢＡＩ 百家樂") == ["百家乐"]


def test_everyday_sentences_are_not_flagged():
    assert _terms("路口交通管制，大家注意绕行") == []   # 口交 inside 路口/交通
    assert _terms("气象台发布暴雨黄色预警") == []        # allowed context
    assert _terms("博士后工作站的申报材料今天截止") == []  # 博士 is not 赌博


def test_short_term_counts_on_words_not_across_them():
    assert _terms("不要发黄色图片") == ["黄色"]  # inside the compound 黄色图片
    assert _terms("黄色的东西别发") == ["黄色"]  # a whole word
    assert _terms("出口交易额增长") == []  # 出口|交易: straddles two words


def test_empty_lexicon_and_text():
    assert Matcher([]).find("赌博") == [] and Matcher(LEXICON).find("") == []


def test_latin_terms_are_whole_words():
    m = Matcher([Term("sb", "insult", boundary=True), Term("porn", "porn", boundary=True)])
    assert [x.term.term for x in m.find("你就是个SB")] == ["sb"]
    assert m.find("插上USB接口") == [] and m.find("pornography") == []


def test_a_term_from_two_sources_matches_once():
    assert len(Matcher([Term("赌博", "gambling"), Term("赌博", "gambling")]).find("赌博")) == 1
