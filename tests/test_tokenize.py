from pipeline.text.tokenize import Tokenizer, get_tokenizer


def test_tokens_drop_spaces_and_fold_full_width():
    t = get_tokenizer()
    assert t is get_tokenizer()
    tokens = t.tokens("明天 上午九点开会，ＶＩＰ客户到访")
    assert " " not in tokens and "VIP" in tokens and "开会" in tokens
    assert t.tokens("") == []


def test_org_terms_stay_whole():
    t = Tokenizer(cache_size=10)
    assert "群卫士" not in t.tokens("请用群卫士检查")
    t.add_terms(["群卫士"])
    assert "群卫士" in t.tokens("请用群卫士检查")
