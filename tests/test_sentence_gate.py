"""The sentence quality gate (engine.sentence_gate) and the strong-evidence label rule
(engine.graph.label_evidence) on recorded real answers (tests/fixtures/llm_answers: the junk quoted
in issue 12 from SmolLM2, and recorded Qwen2.5-Coder-1.5B answers) and on hand-written lines."""
import json
from pathlib import Path

import pytest

from engine.graph import label_evidence, label_sentence, mentions, strong_synonyms
from engine.parsing import parse_phrases, parse_sentences
from engine.sentence_gate import REASONS, GateSettings, SentenceGate, junk_attribute

FIX = Path(__file__).parent / "fixtures" / "llm_answers"
INDEX = json.loads((FIX / "index.json").read_text())
WAREHOUSE = ["forklift", "pallet", "hand truck", "cardboard box", "ladder"]
# What Qwen2.5-Coder-1.5B really answered for synonyms of forklift and pallet (issue 12).
LLM_SYNONYMS = {"forklift": ["crane", "truck"], "pallet": ["box"]}


def test_issue12_junk_is_rejected_each_for_its_reason():
    raw = (FIX / "issue12_smollm2_junk.txt").read_text()
    gate = SentenceGate(WAREHOUSE, {})
    lines = parse_sentences(raw)
    assert len(lines) == 4, lines
    kept = [t for t in lines if gate.check(t, "coarse", ["cardboard box"])]
    assert kept == []
    reasons = [r.reason for r in gate.rejections]
    assert reasons == ["meta", "trivia", "preamble", "meta"], [(r.text, r.reason) for r in gate.rejections]
    assert gate.counts()["meta"] == 2 and set(gate.counts()) == set(REASONS)


def test_junk_attribute_never_becomes_an_attribute():
    assert junk_attribute("The words in the list are")
    assert junk_attribute("Here are the attributes:")
    assert junk_attribute("made of")
    assert not junk_attribute("brown corrugated cardboard")
    assert not junk_attribute("yellow paint")


@pytest.mark.parametrize("text,reason", [
    ("Here are five sentences about a ladder:", "preamble"),
    ("1. A ladder:", "preamble"),
    ("The first sentence describes a ladder leaning on a wall.", "meta"),
    ("A ladder is spelled with two d's, which is a common spelling question.", "meta"),
    ("In 1862 John Basely patented the first stepladder in the United States.", "trivia"),
    ("The ladder appeared in the movie Vertigo next to the bell tower.", "trivia"),
    ("OSHA regulations say a ladder must extend three feet above the landing.", "trivia"),
    ("Ladders are commonly used in the food industry to reach the top shelves.", "trivia"),
    ("The aluminium ladder is capable of holding three hundred pounds with ease.", "trivia"),
    ("A ladder is used by painters to reach high walls and ceilings.", "trivia"),
    # recorded real Qwen2.5-Coder-1.5B lines of the VOC run, with "ladder" for their category
    ("The ladder's smooth rails are designed to generate lift and increase its speed.", "trivia"),
    ("The smooth surface of this ladder is easy to clean, making it ideal for homes with pets.", "trivia"),
    ("The wheels of a ladder have a diameter of 26 inches.", "trivia"),
    ("A large ladder holds a capacity of 7 gallons, ready for use during hot summer days.", "trivia"),
    ("The ladder has a handle that allows the rider to control the speed and direction.", "trivia"),
    ("A sturdy ladder with a handle that can be used for various tasks such as washing windows.", "trivia"),
    ("The ladder is covered in a soft cotton fabric that provides comfort without being too hot.", "trivia"),
    ("The steps of the ladder offer a beautiful view of the countryside, ideal for relaxation.", "trivia"),
    # recorded real lines of the complete VOC run (2,033 kept before these rules), category made "ladder"
    ("The ladder is used to make tea and water for the family.", "trivia"),
    ("The ladder's long rails serve as a point of reference for controlling speed and direction.", "trivia"),
    ("The rungs of a ladder help maintain balance and stability when the ladder is moving.", "trivia"),
    ("A ladder's tail light helps drivers recognize its position on the road.", "trivia"),
    ("The transmission in the ladder is a crucial component that helps control the flow of power.", "trivia"),
    ("The fuel tanks play a crucial role in the ladder's performance and reliability.", "trivia"),
    ("The size and shape of a ladder can vary widely depending on its intended use.", "trivia"),
    ("The size of a ladder depends on whether it is used for painting or picking apples.", "trivia"),
    ("The ladder comes in various colors and textures to match different decor styles.", "trivia"),
    ("The ladder's smooth ride and light design make it an excellent choice for beginners.", "trivia"),
    ("The ladder's long rails allow for easy refueling and maintenance operations.", "trivia"),
    ("A ladder is typically yellow, with large steps that can hold two people at once.", "trivia"),
    ("Ladders are known for their hunting skills and the ability to catch prey quickly.", "trivia"),
    ("A person with an almond-shaped ladder has a smaller mouth and may be more shy.", "trivia"),
    ("The efficient engine of the ladder, as depicted in the photograph, performed flawlessly.", "trivia"),
    ("The ladder's long hull was the first thing I noticed as I stepped onto the deck.", "meta"),
    ('In a photo, the size of "ladder" is small.', "meta"),
    # recorded real lines of Qwen on a dev vocabulary (office things), category made "ladder"
    ('The desk\'s surface is made entirely out of "ladder".', "meta"),
    ("The ladder contained all the necessary tools and documents I needed for work or school.", "meta"),
    # recorded real lines of the COCO run: Qwen slipped into Chinese mid-sentence
    ("The ladder's edge glints like钻石 as it slices through water.", "mixed_script"),
    ("A wide open ladder is ready for装载 goods.", "mixed_script"),
    ("A ladder.", "too_short"),
    ("The ladder " + "is very tall and " * 15 + "red.", "too_long"),
    ("A worker in a yellow vest climbs up to the top shelf of the warehouse.", "off_topic"),
])
def test_each_reason(text, reason):
    """The reason of the whole line (what `check` records unless a trailing claim can be cut off)."""
    gate = SentenceGate(WAREHOUSE, {})
    assert gate.reason(text, ["ladder"])[0] == reason


# Recorded real Qwen2.5-Coder-1.5B lines (benchmark kitchen run, VOC and COCO runs), category made
# "ladder": the claim sits in a trailing clause, and what is left describes a photo.
@pytest.mark.parametrize("text,head", [
    ("The ladder has a square shape with four sides, making it easy to fit into containers of different sizes.",
     "The ladder has a square shape with four sides."),
    ("The ladder is a square-shaped tool with four legs and a handle, which allows it to be carried easily.",
     "The ladder is a square-shaped tool with four legs and a handle."),
    ("The ladder is a flat, smooth surface designed for use in the kitchen, where chefs and cooks prepare food.",
     "The ladder is a flat, smooth surface."),
    ("A ladder is placed on the counter while a whisk is left behind, allowing for the preparation of tea.",
     "A ladder is placed on the counter while a whisk is left behind."),
    ("A large ladder with multiple steps is arranged in the living room, providing ample seating options.",
     "A large ladder with multiple steps is arranged in the living room."),
    ("A shiny ladder is made of a synthetic material that has a high elasticity, allowing for quick climbs.",
     "A shiny ladder is made of a synthetic material that has a high elasticity."),
    ("An umbrella stands near a ladder, offering a cooling shade during hot days.",
     "An umbrella stands near a ladder."),
    # recorded real COCO lines, category made "ladder"
    ("A compact ladder is placed in a corner of the kitchen for easy access.",
     "A compact ladder is placed in a corner of the kitchen."),
    ("A bright red ladder stands proudly on a sunny day, inviting people to sit and rest.",
     "A bright red ladder stands proudly on a sunny day."),
])
def test_a_trailing_claim_is_cut_off_and_the_photo_kept(text, head):
    gate = SentenceGate(WAREHOUSE, {})
    assert gate.reason(text, ["ladder"])[0] == "trivia"
    kept = gate.check(text, "coarse", ["ladder"])
    assert kept and kept.text == head and text == head[:-1] + kept.cut, kept
    assert gate.rejections == []


@pytest.mark.parametrize("text", [
    "A heavy ladder is used to reach the roof of the barn.",  # the claim is the main clause
    "The small ladders are perfect for handling boxes on the top shelf.",  # "The small ladders are." dangles
    "The ladder, which is used for picking apples, stands in the orchard.",  # "The ladder." is too short
    "The steps are wide, making the ladder ideal for heavy boxes.",  # what is left does not name the ladder
])
def test_a_claim_that_cannot_be_cut_off_rejects_the_line(text):
    gate = SentenceGate(WAREHOUSE, {})
    assert not gate.check(text, "coarse", ["ladder"])
    assert gate.rejections[-1].reason == "trivia" and gate.rejections[-1].text == text


# recorded real Qwen2.5-Coder-1.5B lines of the COCO run
@pytest.mark.parametrize("text, reason", [
    ("A brown spoon is used to mix together flour and eggs.", None),
    ("A knife with a long blade is used to slice meat and fish.", None),
    ("A metal fork with a long handle is used for stirring soup.", None),
    ("A small, sharp-edged baseball bat is used to hit fast pitches in a game.", None),
    ("A cool, white refrigerator is used for storing food.", "trivia"),
    ("A spoon is used to measure flour and sugar.", None),
    ("A blue suitcase is used to store clothes for the week ahead.", "trivia"),
    ("The boat is used to transport cargo across the river, showcasing its practicality.", "trivia"),
    ("Airplanes are used for various purposes such as commercial flights and rescue missions.", "trivia"),
    ("A knife can be used to cut bread and cheese.", "trivia"),  # "can be used": what it is for
    # recorded real lines the gate kept before its meaning and quality rules (COCO, VOC runs)
    ("In many cultures, the spoon is seen as a symbol of refinement and sophistication.", "trivia"),
    ("The sharp edge of the knife makes it easy to cut through tough materials and hard surfaces.", "trivia"),
    ("Umbrellas are often made of waterproof materials.", "trivia"),
    ("A blue traffic light suggests the area is busy with cars.", "trivia"),
    ("When you see a donut, it reminds you of the yummy treats that people enjoy eating.", "meta"),  # the reader
    ("The dining table is made from a durable metal alloy that can withstand everyday use.", "trivia"),
    ("Sofas can be made from different materials such as fabric, leather, or wood.", "trivia"),
    ("The bicycle, with its sleek frame and smooth tires, is a symbol of modernity and freedom.", "trivia"),
    ("A traffic light hangs above the crossing, its red lamp lit.", None),  # not "suggests"
    ("A hot oven is essential for cooking meats like roast beef or chicken.", "trivia"),
    ("The weight of a baseball bat can affect the player's swing speed and accuracy.", "trivia"),
    ("The zebra's stripe design is a signature feature of many animals.", "trivia"),
    # "used by" one person seen doing a hand action is a caption; a habit of a kind stays a claim
    # (recorded: a dev-vocabulary Qwen run, then COCO)
    ("A blue screwdriver is used by a worker to remove a nut from a pipe.", None),
    ("A long, thin baseball bat is used by a batter to hit the ball.", None),
    ("Scissors are used by carpenters to cut wood and make furniture.", "trivia"),
    ("A bottle is used by a baker to make cookies and pastries.", "trivia"),
    ("A short, lightweight baseball bat is used by a player practicing his skills before a game.", "trivia"),
    # recorded COCO lines the gate kept before 2026-11-30 (third session)
    ("In a quiet kitchen, the oven is warming up to 450°F to cook chicken breasts.", "trivia"),
    ("The sleek, aerodynamic exterior of the bicycle is a masterpiece of engineering and craftsmanship.", "trivia"),
    ("The color of the donut can be seen as a sign of freshness.", "trivia"),
    ("A smooth, polished exterior of the boat adds to its overall aesthetic appeal.", "trivia"),
    ("A stop sign of red metal stands at the corner.", None),
    # recorded COCO / VOC lines the gate kept before 2026-11-30 (fourth session): past tense, likenesses
    ("The long blade of the knife allowed for precise control over cuts.", "trivia"),
    ("The smooth surface of the surfboard allowed the rider to keep their balance on the waves.", "trivia"),
    ("A fire hydrant is like a living statue, its red emblem casting a warm glow on the landscape.", "trivia"),
    ("The engine of a car is like a giant pump that turns fuel into motion.", "trivia"),
    ("This creature had small, sharp ears that resembled those of a sheep.", "trivia"),
    ("The bus is shaped like a long, curved rectangle with wheels at either end.", None),
    ("The glass was shaped like a wine cup.", None),
    ("The large fuel tanks in an airplane are essential components that enable the plane to fly.", "trivia"),
    ("Sheep with small ears and pointed noses have been the traditional choice for many years.", "trivia"),
    ("The color of a dining table can also be used to create a visually appealing setting.", "trivia"),
    ("The tv monitor has a large screen that allows viewers to enjoy high-definition visuals.", "trivia"),
    ("A cat is often depicted with a round face and large ears.", "trivia"),
    ("The bottle had a slim and sleek design that made it easy to carry around.", "trivia"),
    ("The smooth surface of an elephant's body is a reflection of its natural beauty and power.", "trivia"),
    ("The photo highlights the importance of jet engine maintenance for the safety of airplanes.", "trivia"),
    ("An ornate wooden chair with intricate patterns is a statement piece that adds character to any space.",
     "trivia"),
    ("This sofa is made of premium velvet that adds a touch of elegance to your living room.", "meta"),
    ("When you press the brake pedal, it pushes against the brake pads to stop the car.", "meta"),
    ("As you approach the cat, notice its smooth grey coat.", None),  # "you" alone is left
    ("A tall wooden chair stands by the window of a bright living room.", None),
])
def test_hand_actions_are_captions_and_purposes_meanings_and_qualities_are_claims(text, reason):
    gate = SentenceGate(["spoon", "knife", "fork", "baseball bat", "refrigerator", "boat", "airplane", "suitcase",
                         "umbrella", "traffic light", "donut", "dining table", "sofa", "bicycle", "oven",
                         "zebra", "screwdriver", "scissors", "bottle", "stop sign", "surfboard", "fire hydrant",
                         "car", "sheep", "bus", "wine glass", "dining table", "tv monitor", "cat", "elephant",
                         "chair", "airplane"], {})
    got = gate.reason(text, [c for c in gate.categories if mentions(text, [c])])
    assert (got and got[0]) == reason, got


def test_a_cut_line_that_repeats_a_kept_one_is_not_kept_twice():
    """Recorded: Qwen wrote "Curved handle of a spatula, which is used for ..." five times."""
    gate = SentenceGate(WAREHOUSE, {})
    assert gate.check("The curved rails of a ladder, which is used for storing food.", "coarse", ["ladder"])
    assert not gate.check("The curved rails of a ladder, which is used for storing bread.", "coarse", ["ladder"])
    assert [r.reason for r in gate.rejections] == ["trivia"]  # the line as written


@pytest.mark.parametrize("text", [
    "A man helps a child climb the ladder in the orchard.",
    "Two workers are helping each other carry a ladder across the yard.",
    "A ladder is being used to reach the top shelf of the warehouse.",
    "A ladder leans against a shop sign that reads \"OPEN\" in red letters.",
    "A painter on a ladder paints the window frame of a mine office white.",
    "A ladder leans on a steel I-beam in the half-built warehouse.",
])
def test_photo_lines_pass_the_purpose_and_narration_rules(text):
    gate = SentenceGate(WAREHOUSE, {})
    assert gate.check(text, "coarse", ["ladder"]), gate.rejections[-1]


def test_a_vocabulary_in_another_script_is_not_mixed_script():
    gate = SentenceGate(["猫", "Café sign"], {})
    assert gate.check("一只 猫 坐在 窗台 上 旁边 有 Café sign 招牌。", "scene", ["猫", "Café sign"]), gate.rejections
    # written as Chinese is, without spaces: the name is found inside the run of characters
    assert gate.check("一只猫坐在窗台上，旁边有一个 Café sign 招牌，阳光照在它的身上。", "scene",
                      ["猫", "Café sign"]), gate.rejections
    latin = SentenceGate(["café sign", "ladder"], {})
    assert latin.check("A café sign leans against the ladder near the naïve mural.", "scene", ["café sign", "ladder"])


def test_duplicates_exact_and_near():
    gate = SentenceGate(WAREHOUSE, {})
    assert gate.check("The cardboard box is brown and sits on a wooden pallet in the warehouse.", "coarse",
                      ["cardboard box"])
    assert not gate.check("The cardboard box is brown, and sits on a wooden pallet in the warehouse!", "coarse",
                          ["cardboard box"])
    assert gate.rejections[-1].reason == "duplicate"
    assert not gate.check("The cardboard box is brown and sits on a wooden pallet in a warehouse.", "coarse",
                          ["cardboard box"])
    assert gate.rejections[-1].reason == "near_duplicate"
    assert gate.check("A stack of flattened cardboard boxes waits beside the loading dock door.", "coarse",
                      ["cardboard box"])


def test_scene_sentences_must_name_both_categories_plural_and_synonyms_count():
    gate = SentenceGate(WAREHOUSE, {"hand truck": ["dolly"]})
    assert gate.check("Two forklifts stack pallets near the open loading dock.", "scene", ["forklift", "pallet"])
    assert not gate.check("Two forklifts move through the aisle of the warehouse.", "scene", ["forklift", "pallet"])
    assert gate.rejections[-1].reason == "off_topic" and "pallet" in gate.rejections[-1].detail
    assert gate.check("A worker wheels a dolly stacked with goods past the ladder.", "scene", ["hand truck", "ladder"])
    loose = SentenceGate(WAREHOUSE, {}, GateSettings(require_all_asked=False))
    assert loose.check("Two forklifts move through the aisle of the warehouse.", "scene", ["forklift", "pallet"])


def test_a_category_word_is_not_meta_talk():
    gate = SentenceGate(["word search", "book"], {})
    assert gate.check("A child circles letters in a word search printed on newspaper.", "coarse", ["word search"])


def test_strong_synonym_rule_hand_truck_and_cardboard_box():
    strong = strong_synonyms(WAREHOUSE, LLM_SYNONYMS | {"forklift": ["crane", "truck", "lift truck"]})
    assert strong["forklift"] == ["crane", "lift truck"] and strong["pallet"] == []
    t1 = "A worker pushes a hand truck loaded with three cardboard boxes across the floor."
    ev = label_evidence(t1, WAREHOUSE, LLM_SYNONYMS, ["hand truck"])
    assert set(ev) == {"hand truck", "cardboard box"} and ev["cardboard box"].startswith("name:")
    assert label_sentence(t1, WAREHOUSE, LLM_SYNONYMS, ["hand truck"]) == ["hand truck", "cardboard box"]
    t2 = "A cardboard box sits open on the concrete floor, its flaps folded back."
    assert label_sentence(t2, WAREHOUSE, LLM_SYNONYMS, ["cardboard box"]) == ["cardboard box"]
    t3 = "A lift truck raises a load of bricks to the second floor."
    ev3 = label_evidence(t3, WAREHOUSE, {"forklift": ["lift truck"]}, ["ladder"])
    assert ev3.get("forklift") == "synonym: lift truck"


def test_name_inside_a_longer_category_name_is_not_evidence():
    cats = ["truck", "hand truck", "box", "cardboard box"]
    ev = label_evidence("A hand truck carries a cardboard box.", cats, {}, ["hand truck"])
    assert set(ev) == {"hand truck", "cardboard box"}
    ev = label_evidence("A truck is parked beside a hand truck.", cats, {}, ["hand truck"])
    assert ev.get("truck", "").startswith("name:")


QWEN = sorted(n for n, m in INDEX.items() if m["model"] == "qwen1.5b" and m["step"].endswith("sentences"))


@pytest.mark.skipif(not QWEN, reason="no recorded Qwen answers")
def test_recorded_qwen_answers_mostly_pass_and_rejections_carry_reasons():
    written = kept = 0
    for name in QWEN:
        meta = INDEX[name]
        gate = SentenceGate(meta["vocabulary"], meta.get("synonyms", {}))
        for text in parse_sentences((FIX / name).read_text()):
            written += 1
            kept += gate.check(text, "coarse", meta["categories"]) is not None
        assert all(r.reason in REASONS and r.text for r in gate.rejections)
    assert written >= 20 and kept / written >= 0.7, (kept, written)


def test_recorded_smollm2_attributes_lose_their_junk():
    names = [n for n in INDEX if INDEX[n]["model"] == "smollm2" and INDEX[n]["step"] == "attributes"]
    items = [p for n in names for p in parse_phrases((FIX / n).read_text())]
    assert items
    assert not [p for p in items if not junk_attribute(p) and p.lower().startswith(("the words", "here are"))]


class RecordedLLM:
    """Replays recorded answers: attribute questions get ATTRIBUTES, sentence questions the given
    answers in order (the last one repeats); logs the sentence questions asked (question, seed)."""

    id = "recorded"
    is_chat = True
    max_concurrency = 1

    def __init__(self, answers):
        self.answers = list(answers)
        self.asked = []

    synonyms: dict = {}

    def generate(self, prompt, settings, on_text=None):
        question = prompt.messages[-1][1]
        if "visual attributes of" in question:
            return "1. brown corrugated cardboard\n2. taped flaps\n"
        if "other names or synonyms" in question:
            return next(raw for cat, raw in self.synonyms.items() if f'"{cat}"' in question)
        self.asked.append((question, settings.seed))
        return self.answers[min(len(self.asked), len(self.answers)) - 1]


GOOD = ("1. A cardboard box sits on a wooden shelf in the stock room.\n"
        "2. The cardboard box has its flaps taped shut with brown packing tape.\n"
        "3. A stack of cardboard boxes leans against the warehouse wall.\n")


def test_short_answers_are_asked_again_with_the_next_seed_until_the_count_is_met():
    from engine.knowledge import KnowledgeSettings, build_knowledge

    junk = (FIX / "issue12_smollm2_junk.txt").read_text()
    one_good = junk + "5. A cardboard box sits open on the concrete floor of the loading dock.\n"
    llm = RecordedLLM([one_good, GOOD])
    settings = KnowledgeSettings(steps=("attributes", "coarse_sentences"), n_coarse_sentences=3, attributes_per_category=1,
                                 max_retries=2)
    kn = build_knowledge(["cardboard box"], llm, settings)
    assert len(kn.sentences) == 3, kn.texts()
    (q1, seed1), (q2, seed2) = llm.asked
    assert seed2 == seed1 + 1 and "generate 3 " in q1 and "generate 2 " in q2
    assert [r.reason for r in kn.rejected] == ["meta", "trivia", "preamble", "meta"]
    assert kn.stats["rejected"]["meta"] == 2 and kn.stats["kept_share"] == round(3 / 7, 4) and kn.stats["surplus"] == 1


def test_attributes_lose_a_leading_article_before_they_are_asked_about():
    """Recorded: Qwen2.5-Coder-1.5B gave kettle the attributes "A bowl with a handle", "A lid with
    handles", "An opening at the top"; the sentence question used to ask 'from the angle of the "A
    bowl with a handle"'."""
    from engine.knowledge import KnowledgeSettings, build_knowledge

    class KettleLLM(RecordedLLM):
        def generate(self, prompt, settings, on_text=None):
            if "visual attributes of" in prompt.messages[-1][1]:
                return "1. A bowl with a handle\n2. A lid with handles\n3. An opening at the top\n4. The kettle spout\n"
            return super().generate(prompt, settings, on_text)

    llm = KettleLLM([GOOD.replace("cardboard box", "kettle")])
    settings = KnowledgeSettings(steps=("attributes", "coarse_sentences"), n_attributes=4, attributes_per_category=1,
                                 n_coarse_sentences=3, max_retries=0)
    kn = build_knowledge(["kettle"], llm, settings)
    assert kn.attributes["kettle"] == ["bowl with a handle", "lid with handles", "opening at the top"]
    assert 'from the angle of the "bowl with a handle"' in llm.asked[0][0]


def test_progress_total_is_fixed_before_the_first_question():
    """Issue 13: one total from the first report; a gate re-ask does not move it or `done`; a step
    that asks fewer questions than planned (2 attributes came back, 3 were allowed) counts the rest
    as not needed, so a finished run ends at done == total and "question 25 of 24" cannot happen."""
    from engine.knowledge import KnowledgeSettings, build_knowledge

    junk = (FIX / "issue12_smollm2_junk.txt").read_text()
    one_good = junk + "5. A cardboard box sits open on the concrete floor of the loading dock.\n"
    other = ("1. An open cardboard box holds packing peanuts on the workbench.\n"
             "2. A flattened cardboard box lies beside the recycling bin.\n")
    llm = RecordedLLM([one_good, GOOD, other])
    settings = KnowledgeSettings(steps=("attributes", "coarse_sentences"), n_attributes=3, n_coarse_sentences=3,
                                 attributes_per_category=3, max_retries=2)
    progress = []
    kn = build_knowledge(["cardboard box"], llm, settings, on_progress=lambda d, t, q: progress.append((d, t, q)))
    assert not kn.cancelled and len(kn.answers) == 4 and len(kn.sentences) == 6  # attributes, 2 coarse, 1 re-ask
    assert {t for _, t, _ in progress} == {4}  # 1 attributes + 1 x min(3 attributes, 3) coarse
    assert [d for d, _, _ in progress] == [1, 2, 3, 3, 4]
    assert "asked again" in progress[3][2] and "not needed" in progress[4][2]


def test_retries_stop_at_the_cap_and_keep_every_rejection():
    from engine.knowledge import KnowledgeSettings, build_knowledge

    junk = (FIX / "issue12_smollm2_junk.txt").read_text()
    llm = RecordedLLM([junk])
    settings = KnowledgeSettings(steps=("attributes", "coarse_sentences"), n_coarse_sentences=3, attributes_per_category=1,
                                 max_retries=2)
    kn = build_knowledge(["cardboard box"], llm, settings)
    assert kn.sentences == [] and len(llm.asked) == 3
    assert [s for _, s in llm.asked] == [0, 1, 2]
    # the same junk three times: the first copy for its own reason, the repeats for the same reasons
    assert len(kn.rejected) == 12 and {r.source for r in kn.rejected} == {"coarse"}


def test_a_cut_sentence_is_trained_on_without_its_claim_and_shows_what_was_cut():
    from engine.knowledge import KnowledgeSettings, build_knowledge
    from engine.presets import knowledge_to_dict

    answer = ("1. The cardboard box has a square shape with four flaps, making it easy to stack in the truck.\n"
              "2. A cardboard box sits on a wooden shelf in the stock room.\n")
    settings = KnowledgeSettings(steps=("attributes", "coarse_sentences"), n_coarse_sentences=2,
                                 attributes_per_category=1, max_retries=0)
    kn = build_knowledge(["cardboard box"], RecordedLLM([answer]), settings)
    assert [(s.text, s.cut) for s in kn.sentences] == [
        ("The cardboard box has a square shape with four flaps.", ", making it easy to stack in the truck."),
        ("A cardboard box sits on a wooden shelf in the stock room.", "")]
    assert kn.rejected == [] and kn.texts()[0] == "The cardboard box has a square shape with four flaps."
    shipped = knowledge_to_dict(kn)["sentences"]
    assert shipped[0]["cut"] == ", making it easy to stack in the truck." and "cut" not in shipped[1]


def test_llm_synonyms_are_suggestions_and_never_label():
    """Qwen's real synonyms (forklift: truck, hoist, crane; hand truck: Pallet truck, ...) are
    kept as suggestions; only a given (accepted) synonym is evidence for a label."""
    from engine.knowledge import KnowledgeSettings, build_knowledge

    llm = RecordedLLM(["1. A crane lifts a pallet onto the truck beside the loading dock.\n"
                       "2. A lift truck carries a pallet of bricks across the yard.\n"
                       "3. A pallet truck moves a stack of pallets down the aisle.\n"])
    llm.synonyms = {"forklift": (FIX / "qwen1.5b_synonyms_1.txt").read_text(),
                    "hand truck": (FIX / "qwen1.5b_synonyms_3.txt").read_text()}
    settings = KnowledgeSettings(steps=("synonyms", "attributes", "coarse_sentences"), n_coarse_sentences=3,
                                 attributes_per_category=1, max_retries=0)
    cats = ["pallet", "forklift", "hand truck"]  # pallet asked first: the repeats for forklift are duplicates
    kn = build_knowledge(cats, llm, settings, synonyms={"pallet": ["skid"]})
    assert kn.suggested_synonyms["forklift"] == ["truck", "hoist", "crane"]
    assert kn.suggested_synonyms["hand truck"] == ["Container truck", "Box truck"]  # "Pallet truck" names a category
    pallet_sentences = [s for s in kn.sentences if s.category == "pallet"]
    assert [s.labels for s in pallet_sentences] == [["pallet"], ["pallet"], ["pallet"]]
    kn2 = build_knowledge(cats, llm, settings, synonyms={"pallet": ["skid"], "forklift": ["lift truck"]})
    lift = next(s for s in kn2.sentences if s.category == "pallet" and "lift truck" in s.text)
    assert lift.labels == ["pallet", "forklift"] and lift.evidence["forklift"] == "synonym: lift truck"


def test_a_scene_answer_that_leaves_categories_out_gets_their_super_category_groups():
    """Qwen's real answer for VOC's twenty categories was the one line "scene: bird, dog, horse";
    the categories it left out get their super-category groups, so every group has scene pairs."""
    from engine.knowledge import KnowledgeSettings, build_knowledge

    class SceneLLM(RecordedLLM):
        def generate(self, prompt, settings, on_text=None):
            return "scene: bird, dog, horse"

    cats = ["bird", "dog", "horse", "cat", "car", "bus", "person"]
    super_of = {"bird": "animal", "dog": "animal", "horse": "animal", "cat": "animal", "car": "vehicle",
                "bus": "vehicle", "person": "person"}
    kn = build_knowledge(cats, SceneLLM([]), KnowledgeSettings(steps=("scenes",)), super_of=super_of)
    assert kn.scene_groups == [["bird", "dog", "horse"], ["bird", "dog", "horse", "cat"], ["car", "bus"]]
    assert kn.stats["scene_groups_source"] == "llm+super"
    whole = build_knowledge(cats[:3], SceneLLM([]), KnowledgeSettings(steps=("scenes",)), super_of=super_of)
    assert whole.scene_groups == [["bird", "dog", "horse"]] and whole.stats["scene_groups_source"] == "llm"


def test_a_name_written_open_or_closed_and_the_head_noun_name_the_category():
    """Recorded real Qwen2.5-Coder-1.5B lines (dev vocabulary, not the bench's): "lawn mower" names
    "lawnmower" and "the hose" names "garden hose"; a generic head ("truck" of "hand truck") or one
    that is another category's name ("bear" of "teddy bear") does not."""
    gate = SentenceGate(["lawnmower", "garden hose", "hand truck", "teddy bear", "bear"], {})
    assert gate.check("A person is pushing a lawn mower through a field, cutting down tall grasses.", "coarse",
                      ["lawnmower"])
    assert gate.check("A hose with a blue colour can be seen running through a dense forest in the morning light.",
                      "coarse", ["garden hose"])
    assert gate.check("The lawn-mower and the gardenhose lie side by side on the freshly cut grass.", "scene",
                      ["lawnmower", "garden hose"])
    assert not gate.check("The truck is loaded with boxes beside the loading dock.", "coarse", ["hand truck"])
    assert not gate.check("The brown bear sits on the pillow of a child's bed.", "coarse", ["teddy bear"])
    assert [r.reason for r in gate.rejections] == ["off_topic", "off_topic"]
    strict = SentenceGate(["garden hose"], {}, GateSettings(accept_head_noun=False))
    assert not strict.check("A hose with a blue colour can be seen running through a dense forest.", "coarse",
                            ["garden hose"])


# recorded COCO lines asked about "orange" (Qwen2.5-Coder-1.5B) that the gate kept before 2026-11-30
@pytest.mark.parametrize("text, kept", [
    ("A small dog chases after an orange ball.", False),
    ("The sky is filled with orange clouds, adding depth and warmth to the landscape.", False),
    ("An orange sun glints off a beach, casting warm shadows on the sand.", False),
    ("The warm, inviting orange hue of the sunset glows on the horizon.", False),
    ("An orange tree stands tall in the garden.", True),
    ("The vibrant oranges in the garden are bright under the deep blue skies above.", True),
    ("A peeled orange sits on a white plate beside a knife.", True),
])
def test_a_colour_named_category_used_as_a_colour_is_off_topic(text, kept):
    gate = SentenceGate(["orange", "sports ball", "dog"], {})
    got = gate.reason(text, ["orange"])
    assert (got is None) == kept, got
    if not kept:
        assert got[0] == "off_topic"
