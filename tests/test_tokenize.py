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


def _texts() -> list[str]:
    """The simulator's traffic, every lexicon line (terms and their allowed contexts) and the test
    corpora (policy sentences among them)."""
    from pathlib import Path

    from pipeline.devtools.simulate import Simulator

    root = Path(__file__).resolve().parents[1]
    texts = {e["text"] for e in Simulator(orgs=2, groups=40, members=12, seed=9).events(30_000)
             if e["kind"] == "message" and e["text"]}
    for path in [*(root / "pipeline/data/lexicon").glob("*.tsv"), *(root / "pipeline/data/lexicon").glob("*.txt"),
                 *(root / "tests/data").glob("*.tsv")]:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line and not line.startswith("#"):
                texts.update(part for part in line.split("\t") if part.strip())
    return sorted(texts)


def _score(t: Tokenizer, tokens: list[str]) -> float:
    """jieba's log-probability of a cut (what its route maximises)."""
    import math

    j = t._jieba  # noqa: SLF001 -- the model's frequencies
    return sum(math.log(j.FREQ.get(w) or 1) - math.log(j.total) for w in tokens)


def test_jieba_fast_cuts_like_jieba_but_for_ties_of_the_model(tmp_path):
    """Where the two backends cut differently, jieba's model scores both cuts alike: the C loop
    breaks ties the other way. That is why `auto` stays jieba (text/tokenize.py)."""
    texts = _texts()
    assert len(texts) > 3000
    user_dict = tmp_path / "org.dict"
    user_dict.write_text("群卫士 10 n\n技术中心 20 n\n", encoding="utf-8")
    slow = Tokenizer(user_dict=str(user_dict), cache_size=0, backend="jieba")
    fast = Tokenizer(user_dict=str(user_dict), cache_size=0, backend="jieba_fast")
    assert (slow.backend, fast.backend) == ("jieba", "jieba_fast")
    assert "群卫士" in fast.tokens("请用群卫士检查") and "群卫士" in slow.tokens("请用群卫士检查")
    differ = [t for t in texts if slow.tokens(t) != fast.tokens(t)]
    assert len(differ) < len(texts) / 100, len(differ)
    for text in differ:
        for piece_slow, piece_fast in zip(_pieces(slow.tokens(text)), _pieces(fast.tokens(text)), strict=True):
            if piece_slow != piece_fast:
                assert "".join(piece_slow) == "".join(piece_fast), text
                assert abs(_score(slow, piece_slow) - _score(slow, piece_fast)) < 1e-9, (text, piece_slow, piece_fast)
    assert Tokenizer(cache_size=0).backend == "jieba"  # auto


def _pieces(tokens: list[str]) -> list[list[str]]:
    """Tokens in runs between punctuation and spaces (jieba cuts each run on its own)."""
    out: list[list[str]] = [[]]
    for tok in tokens:
        if len(tok) == 1 and not tok.isalnum():
            out.append([])
        else:
            out[-1].append(tok)
    return out


def test_run_by_run_cut_is_jiebas_cut_exactly():
    """The tokenizer cuts run by run and remembers each run's cut (text/tokenize.py): the tokens
    must be `jieba.lcut`'s, spaces dropped, with and without HMM, on every text we have, also when
    the runs come from the cache (second pass) and after org terms changed the dictionary."""
    import unicodedata

    import jieba

    texts = _texts() + ["a\r\nb  c\t１２３", "——《通知》：请于 9:30 到会！！", "VIP客户 vip-2024 #3 50% a.b_c"]
    for hmm in (False, True):
        ref = jieba.Tokenizer()
        t = Tokenizer(hmm=hmm, cache_size=100_000)
        for _ in range(2):
            for text in texts:
                want = [w for w in ref.lcut(unicodedata.normalize("NFKC", text), HMM=hmm) if not w.isspace()]
                assert t.tokens(text) == want, text
        assert "刚才说" not in t.tokens("好，刚才说的")  # the run's cut is cached now
        ref.add_word("刚才说")
        t.add_terms(["刚才说"])
        for text in ("刚才说的", "大家刚才说的事"):
            assert "刚才说" in t.tokens(text) and t.tokens(text) == ref.lcut(text, HMM=hmm)
