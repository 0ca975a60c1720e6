"""engine.parsing on real answers of the bundled models (tests/fixtures/llm_answers) and on
hand-written messy answers; hypothesis checks that no input crashes it and outputs are clean."""
import json
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from engine.graph import mentions
from engine.parsing import parse_groups, parse_phrases, parse_sentences

FIX = Path(__file__).parent / "fixtures" / "llm_answers"
INDEX = json.loads((FIX / "index.json").read_text())
SENTENCE_STEPS = {"coarse_sentences", "fine_sentences", "scene_sentences"}


def _clean(items):
    assert all(isinstance(i, str) and i and i == i.strip() for i in items)
    keys = [i.casefold() for i in items]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("name", sorted(INDEX))
def test_recorded_answers_parse_clean(name):
    raw = (FIX / name).read_text()
    step = INDEX[name]["step"]
    items = parse_sentences(raw) if step in SENTENCE_STEPS else parse_phrases(raw)
    _clean(items)
    for it in items:
        assert not it[0] in "-*•#" and not it[:2].rstrip(".").isdigit()


def test_recorded_sentence_answers_yield_sentences():
    names = [n for n in INDEX if INDEX[n]["step"] in SENTENCE_STEPS]
    assert names
    got = [s for n in names for s in parse_sentences((FIX / n).read_text())]
    assert len(got) >= len(names)
    assert all(len(s.split()) >= 3 for s in got)


def test_recorded_attribute_lists_yield_short_items():
    names = [n for n in INDEX if INDEX[n]["step"] == "attributes"]
    items = [p for n in names for p in parse_phrases((FIX / n).read_text())]
    assert items and all(len(p.split()) <= 6 for p in items)


def test_numbered_bulleted_preamble_repeats():
    raw = ("Sure! Here are five attributes of a bicycle:\n\n1. **Frame**: usually metal\n2) two wheels\n"
           "- handlebars, pedals; chain\n* Frame\n• saddle\n\nI hope this helps!")
    assert parse_phrases(raw) == ["Frame", "two wheels", "handlebars", "pedals", "chain", "saddle"]


def test_a_dash_heads_a_phrase_but_not_a_sentence():
    """Recorded (Qwen, kitchen bench, seed 1): the heads are the attributes, not "grilling"."""
    raw = ("- High heat - Can be used for deep-frying, grilling, or sautéing\n- Large size - Commonly used in "
           "cooking\n- Durable material - Often made of cast")
    assert parse_phrases(raw) == ["High heat", "Large size", "Durable material"]
    assert parse_phrases("1. stainless-steel body\n2. glass lid") == ["stainless-steel body", "glass lid"]
    assert parse_sentences("1. A kettle - shiny and new - sits on the stove.") == [
        "A kettle - shiny and new - sits on the stove."]


def test_inline_numbered_run_and_cut_off_phrase():
    assert parse_phrases("1. red 2. blue 3. green and") == ["red", "blue"]
    assert parse_phrases("1. red 2. blue 3. green and\n") == ["red", "blue", "green and"]


def test_sentences_split_strip_heads_and_drop_cut_off():
    raw = ("Here are 3 sentences:\n1. Color: The cat is black. It sleeps on the sofa.\n"
           "2. A dog runs in the park!\n3. The cat sits on the")
    assert parse_sentences(raw) == ["The cat is black.", "It sleeps on the sofa.", "A dog runs in the park!"]


def test_refusal_and_other_languages():
    assert parse_sentences("I'm sorry, but I can't help with that request.") == []
    assert parse_phrases("As an AI language model, I cannot do this.") == []
    assert parse_phrases("1. rouge\n2. 金属のフレーム\n3. Räder") == ["rouge", "金属のフレーム", "Räder"]
    assert parse_sentences("1. Le chat dort sur le canapé.\n2. Der Hund läuft im Park.") == [
        "Le chat dort sur le canapé.", "Der Hund läuft im Park."]


def test_html_tags_are_stripped():
    assert parse_sentences("1. <em>This color is a red bicycle.</em>\n2. <b>A bike</b> leans on a wall.") == [
        "This color is a red bicycle.", "A bike leans on a wall."]
    assert parse_phrases("<ul><li>red</li><li>blue</li></ul>") == ["red", "blue"]


def test_echoed_completion_prompt_is_dropped():
    raw = "1. Appearance.\n2. Color.\n\nQuestion: Please summarize 5 visual attributes of \"dog\".\nAnswer:\n1. Size"
    assert parse_phrases(raw) == ["Appearance", "Color", "Size"]


def test_groups_with_headings_and_lists():
    cats = ["car", "bus", "dog", "cat", "sofa"]
    find = lambda t: mentions(t, cats)  # noqa: E731
    raw = "Here you go:\nVehicles: car, buses\n**Animals**\n- dog\n- cats\nsofa and cat at home"
    assert parse_groups(raw, find) == [("Vehicles", ["car", "bus"]), ("Animals", ["dog", "cat"]), ("", ["sofa"])]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_no_input_crashes_and_outputs_are_clean(raw):
    for items in (parse_phrases(raw), parse_sentences(raw)):
        _clean(items)
    groups = parse_groups(raw, lambda t: mentions(t, ["cat", "dog"]))
    assert all(names for _, names in groups)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["1.", "-", "*", "Sure!", "cat", "dog,", "red;", "\n", " ", ":", "**",
                                 "The cat sleeps.", "I'm sorry", "2)", "é", "。"]), max_size=40))
def test_list_like_noise_is_clean(parts):
    raw = " ".join(parts)
    _clean(parse_phrases(raw))
    _clean(parse_sentences(raw))
