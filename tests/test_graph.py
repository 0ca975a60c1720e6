"""engine.graph on a hand-made case whose labels, weights and cliques are known."""
import pytest

from engine.graph import build_graph, cooccurrence, label_evidence, label_sentence, maximal_cliques, mentions

CATS = ["person", "bicycle", "car", "bus", "dog", "diningtable", "sofa"]
SYN = {"diningtable": ["dining table", "table"], "sofa": ["couch"]}


def test_labels_word_boundary_case_and_plural_insensitive():
    assert label_sentence("Two PEOPLE ride bicycles past parked cars.", CATS, SYN, ["bicycle"]) == [
        "person", "bicycle", "car"]
    # "carpet" is not "car", "dogma" is not "dog", "busy" is not "bus"
    assert label_sentence("A busy carpet shop full of dogma.", CATS, SYN, ["sofa"]) == ["sofa"]
    assert label_sentence("Buses wait; a dog's bowl sits under the dining-table.", CATS, SYN, []) == [
        "bus", "dog", "diningtable"]
    assert label_sentence("The couches and tables.", CATS, SYN, ["person"]) == ["person", "diningtable", "sofa"]
    assert mentions("Ponies everywhere", ["pony"]) == ["pony"]


def test_weights_threshold_edits_and_cliques():
    labels = [
        ["person", "bicycle", "car"], ["person", "bicycle", "car"], ["person", "car"],
        ["car", "bus"], ["car", "bus"], ["dog", "sofa"], ["dog", "sofa"], ["diningtable"],
        ["dog", "sofa", "person"],
    ]
    w = cooccurrence(labels, CATS)
    assert w[("person", "bicycle")] == 2 and w[("person", "car")] == 3 and w[("bicycle", "car")] == 2
    assert w[("car", "bus")] == 2 and w[("dog", "sofa")] == 3 and w[("person", "dog")] == 1
    assert ("bicycle", "person") not in w and ("diningtable", "sofa") not in w
    g = build_graph(w, CATS, tau=2)
    assert maximal_cliques(g) == [["person", "bicycle", "car"], ["car", "bus"], ["dog", "sofa"]]
    assert g["person"]["car"]["weight"] == 3
    g2 = build_graph(w, CATS, tau=2, added=[("sofa", "diningtable"), ("diningtable", "dog")],
                     removed=[("bicycle", "car")])
    assert maximal_cliques(g2) == [["person", "bicycle"], ["person", "car"], ["car", "bus"],
                                   ["dog", "diningtable", "sofa"]]
    assert maximal_cliques(build_graph(w, CATS, tau=4)) == []
    assert maximal_cliques(build_graph(w, CATS, tau=1))[0] == ["person", "bicycle", "car"]


def test_a_name_matches_open_hyphenated_and_closed_spellings_as_a_whole_word():
    assert mentions("A lawn mower and a lawn-mower", ["lawnmower"]) == ["lawnmower"]
    assert mentions("a potted plant beside the tv monitor", ["pottedplant", "tvmonitor"]) == ["pottedplant", "tvmonitor"]
    assert mentions("two gardenhoses", ["garden hose"]) == ["garden hose"]
    assert mentions("lawnmowers in a row", ["lawn mower"]) == ["lawn mower"]
    assert mentions("a carrot cake and a c ar", ["car"]) == []
    assert mentions("the lawnmowerman", ["lawnmower"]) == []


@pytest.mark.parametrize("text,second", [
    # recorded real Qwen2.5-Coder-1.5B lines of the COCO run, asked about another category
    ("A bright orange bus is moving along a rural road.", False),
    ("An orange bowl of cereal is set out for breakfast.", False),
    ("A pink and orange train is making its way through a busy city.", False),
    ("An orange-colored bowl stands on the table.", False),
    ("An orange and white cat sleeps in a bowl.", False),
    ("The striking red train is painted bright orange, making it stand out on the field.", False),
    ("The bowl holds napkins, all in shades of yellow and orange.", False),
    ("A colorful bowl with designs in gold, silver, and orange stands by the bus.", False),
    ("A vibrant array of colors, including orange, blue, and pink, decorate the bowl.", False),
    ("A red knife with a deep orange peel stands out in a bright garden.", False),
    # the fruit
    ("An orange sits in a bowl on the kitchen table.", True),
    ("A knife cuts orange slices on a board.", True),
    ("Two oranges lie beside the bowl.", True),
    ("A bowl holds an orange, a banana and a pear.", True),
    ("A bowl holds an orange.", True),
    ("A knife lies between a bowl and an orange, and a slice of orange.", True),
])
def test_a_colour_word_category_labels_the_thing_not_the_colour(text, second):
    cats = ["orange", "bowl", "bus", "train", "cat", "knife"]
    asked = [next(c for c in ["bowl", "bus", "train", "knife"] if c in text.lower())]
    assert ("orange" in label_evidence(text, cats, {}, asked)) is second
