import pytest

from gptsuite.errors import UserError
from gptsuite.tokenizer import GPT2_EOT, CharTokenizer, GPT2Tokenizer, from_meta


def test_gpt2_known_ids():
    tok = GPT2Tokenizer()
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.enc.eot_token == GPT2_EOT == 50256
    assert tok.enc.n_vocab == 50257


def test_gpt2_round_trips_unicode():
    tok = GPT2Tokenizer()
    for text in ["héllo wörld", "日本語のテキスト", "emoji 🙂👍🏽", "tabs\tand\nnewlines  ", "<|endoftext|> as text"]:
        assert tok.decode(tok.encode(text)) == text
    assert GPT2_EOT not in tok.encode("<|endoftext|>")  # document text never becomes the special token


def test_char_round_trip_and_meta():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == sorted(set("hello world"))
    assert tok.decode(tok.encode("world hello")) == "world hello"
    again = from_meta(tok.meta())
    assert again.encode("hello") == tok.encode("hello")


def test_char_unknown_character_is_a_clear_error():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(UserError, match="'z'"):
        tok.encode("abz")
