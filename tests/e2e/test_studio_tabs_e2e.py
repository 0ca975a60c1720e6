"""Every tab of the studio in headless Chromium, with no LLM in the loop: the knowledge (sentences
and attributes) is written into the app's database by a second connection, then the header's
refresh redraws every tab (the layout's loop over the tabs' outputs/refresh).

A person's way through, each step with a screenshot (artifacts/e2e/test_studio_tabs_e2e/) and
assertions on what the page shows: checked number boxes with their message beside them, the
Cancel buttons' wiring (nothing running), a sentence edited, a delete cancelled and then
confirmed (the editor cleared), the graph redrawn from a typed tau and for one category's
neighbourhood, a short training run (run 1 of the project, named as the classifier in use), the
Classify gallery (thumbnails, label chips, the hand-crafted chips on demand, a typed top-k, a zip
whose escaping member is refused while its folder's image is scored with its path), Evaluate from
uploaded files (unmatched labels listed, then Classify's confidences calibrated), Export, a
reload, and a project whose category names are HTML shown as text - with the previous project's
messages gone. Every result message sits right below the button that produced it."""
from __future__ import annotations

import re
import zipfile
from types import SimpleNamespace

import pytest

from tests.e2e.test_studio_e2e import field, make_images, tab, wait_text

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]
EVIL = ["<b>bold cat</b>", "<img src=x>"]


def near(page, button: str, message: str, max_gap: int = 160) -> None:
    """The message's top edge is within ``max_gap`` px below the button's bottom edge."""
    b = page.locator(button).bounding_box()
    m = page.locator(message).bounding_box()
    assert b and m, (button, message)
    gap = m["y"] - (b["y"] + b["height"])
    assert -5 <= gap <= max_gap, f"{message} is {gap:.0f}px below {button}"


def type_number(page, elem_id: str, value: str, key: str = "Tab") -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(value)
    box.press(key)


def chips_per_card(page, kind: str = "tuned") -> list[int]:
    cards = page.locator("#classify-results .ifs-card:not(.ifs-error)")
    return [cards.nth(i).locator(f'[data-kind="{kind}"] .ifs-chip').count() for i in range(cards.count())]


def labelled_upload(folder, images):
    csv = folder / "labels.csv"
    labels = ["cat", "dog;llama"]
    csv.write_text("filename,labels\n" + "".join(f"{p.name},{lab}\n" for p, lab in zip(images, labels)))
    return csv


def zip_with_escaping_member(folder, image):
    z = folder / "photos.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(image, "sub/inside.png")
        zf.writestr("../../escape.png", b"x")
    return z


def hub_model_offline(page, shots):
    """The Hub picker on this offline server: a file that is not cached is refused next to the
    picker in one sentence (by Download, and by Generate, which downloads first), and what was
    typed stays; then back to the recorded answers."""
    assert not page.locator("#hub-model").is_visible(), "the Hub picker shows for the Hub kind only"
    page.locator("#llm-kind").get_by_label("Hugging Face Hub model").check()
    page.wait_for_selector("#hub-model", state="visible")
    assert "qwen2.5-1.5b (1.1 GB)" in field(page, "hub-model").input_value()
    field(page, "hub-model").click()
    page.get_by_role("option", name=re.compile("Any repository")).click()
    typed = "tester/tiny-GGUF/tiny-q4_k_m.gguf"
    field(page, "hub-file").fill(typed)
    page.locator("#hub-download").click()
    msg = wait_text(page, "#hub-msg", "offline")
    assert "tester/tiny-GGUF/tiny-q4_k_m.gguf is not in the Hub cache and this machine is offline" in msg
    near(page, "#hub-download", "#hub-msg", max_gap=200)
    assert field(page, "hub-file").input_value() == typed
    shots(page, "hub-model-offline")
    typed = "tester/tiny-GGUF/other-q4_k_m.gguf"
    field(page, "hub-file").fill(typed)
    page.locator("#gen-knowledge").click()  # generating downloads the model first: refused the same way
    assert "next to the picker" in wait_text(page, "#knowledge-msg", "picker")
    assert "this machine is offline" in wait_text(page, "#hub-msg", "other-q4_k_m.gguf is not in the Hub cache")
    assert field(page, "hub-file").input_value() == typed
    page.locator("#llm-kind").get_by_label("Recorded answers (replay)").check()
    page.wait_for_selector("#hub-model", state="hidden")


def knowledge_and_sentences(page, app_server, shots):
    from engine.storage import Store
    from tests.test_studio_handlers import write_corpus

    tab(page, "2 Knowledge")
    hub_model_offline(page, shots)
    assert page.locator("#ks-steps label").count() >= 2
    type_number(page, "ks-n_attributes", "0")
    assert "at least 1" in wait_text(page, "#ks-fields-msg", "attributes")
    page.locator("#gen-knowledge").click()
    assert "Fix the numbers" in wait_text(page, "#knowledge-msg", "Fix")
    near(page, "#gen-knowledge", "#knowledge-msg")
    shots(page, "knowledge-count-refused")
    type_number(page, "ks-n_attributes", "2")
    page.wait_for_function("() => !document.querySelector('#ks-fields-msg').innerText.trim()")
    # the sentence questions' worked examples are shown, editable, beside their question
    page.get_by_text("Question templates").click()
    example = page.locator("#ks-example-coarse_sentences textarea")
    example.wait_for(timeout=30_000)
    assert example.input_value().startswith("1. A yellow school bus") and example.is_editable()
    assert "about school bus and color" in page.locator("#ks-example-coarse_sentences").inner_text()
    assert page.locator("#ks-example-scene_sentences textarea").input_value().count("frisbee") == 3
    example.scroll_into_view_if_needed()
    shots(page, "knowledge-worked-examples")
    page.get_by_text("Question templates").click()
    page.locator("#cancel-knowledge").click()
    wait_text(page, "#knowledge-msg", "Nothing is running")
    # knowledge written into the same database by another connection, then the redraw
    with Store(app_server["tmp"] / "studio.sqlite") as store:
        pid = store.find_project("tabs pets").id
        write_corpus(SimpleNamespace(store=store), pid)
        store.set_project_settings(pid, {"suggested_synonyms": {"cat": ["kitty", "lion"]}})
    page.get_by_role("button", name="Refresh list").click()
    page.wait_for_selector("#kn-keep input[type=checkbox]", timeout=60_000)
    assert "default template" in wait_text(page, "#kn-prompt-used", "Prompt in use")
    assert field(page, "kn-category").input_value() == "cat"
    assert "not used for labels" in wait_text(page, "#kn-suggested", "lion")
    box = page.locator("#kn-keep input[type=checkbox]").first
    assert box.is_checked()
    box.uncheck()
    page.locator("#kn-suggested").get_by_label("kitty").check()
    page.locator("#save-category").click()
    wait_text(page, "#kn-cat-msg", "Saved")
    page.wait_for_function("() => document.querySelector('#kn-synonyms textarea, #kn-synonyms input')"
                           ".value === 'kitty'")
    page.wait_for_function("() => !document.querySelector('#kn-suggested').innerText.includes('kitty')")
    assert "lion" in page.locator("#kn-suggested").inner_text(), "the suggestion not ticked stays one"
    shots(page, "knowledge-edited")

    tab(page, "3 Sentences")
    wait_text(page, "#sent-table", "sofa")
    wait_text(page, "#sent-counts", "cat")
    assert "enabled sentences only" in page.inner_text("body"), "why the two counts differ"
    page.locator("#sent-table [data-testid=cell-0-1]").click()  # the first row's text
    text = field(page, "sent-text")
    page.wait_for_function("() => document.querySelector('#sent-text textarea').value.length > 0")
    text.fill("a cat sleeps on a sofa")
    page.locator("#sent-save").click()
    wait_text(page, "#sent-msg", "Saved sentence")
    near(page, "#sent-save", "#sent-msg", 220)
    wait_text(page, "#sent-table", "a cat sleeps on a sofa")
    shots(page, "sentence-edited")
    page.locator("#sent-delete").click()
    wait_text(page, "#sent-confirm", "cannot be undone")
    shots(page, "sentence-delete-asked")
    page.locator("#sent-delete-no").click()
    page.wait_for_selector("#sent-confirm", state="hidden")
    assert field(page, "sent-text").input_value() == "a cat sleeps on a sofa", "nothing deleted on No"
    page.locator("#sent-delete").click()
    page.locator("#sent-delete-yes").click()
    wait_text(page, "#sent-msg", "Deleted sentence")
    page.wait_for_function("() => document.querySelector('#sent-text textarea').value === ''")
    page.wait_for_function("() => !document.querySelector('#sent-table').innerText.includes('a cat sleeps on a sofa')")
    shots(page, "sentence-deleted")


def graph_and_train(page, shots):
    tab(page, "4 Graph")
    wait_text(page, "#graph-cliques", "edges")
    type_number(page, "graph-tau", "1", key="Enter")
    wait_text(page, "#graph-cliques", "tau = 1")
    shots(page, "graph-tau-typed")
    focus = page.locator("#graph-focus input").first
    focus.click()
    focus.fill("sofa")
    focus.press("Enter")
    wait_text(page, "#graph-cliques", "cliques with sofa")
    shots(page, "graph-neighbourhood")

    tab(page, "5 Train")
    wait_text(page, "#train-device", "CPU|CUDA")
    assert not page.locator("#train-weights").is_visible(), "no weights panel: tiny random CLIP needs none"
    wait_text(page, "#train-active", "none yet")
    page.locator("#train-cancel").click()
    wait_text(page, "#train-status", "Nothing is running")
    type_number(page, "tc-epochs", "0")
    assert "at least 1" in wait_text(page, "#train-settings-msg", "epochs")
    page.locator("#train-start").click()
    wait_text(page, "#train-status", "Fix the settings")
    shots(page, "train-epochs-refused")
    type_number(page, "tc-epochs", "1")
    type_number(page, "tc-batch_size", "8")
    page.wait_for_function("() => !document.querySelector('#train-settings-msg').innerText.trim()")
    page.locator("#train-start").click()
    wait_text(page, "#train-status", "Loading|Step|Trained", timeout=300_000)
    status = wait_text(page, "#train-status", "Trained|⚠️", timeout=600_000)
    assert "run 1 of this project" in status, status
    near(page, "#train-start", "#train-status")
    wait_text(page, "#train-runs", "done")
    wait_text(page, "#train-active", "run 1")
    page.wait_for_function("() => { const p = document.querySelector('#train-plot .js-plotly-plot');"
                           " return p && p.data && p.data.some(t => t.yaxis === 'y2'); }")
    shots(page, "trained")


def classify_and_evaluate(page, tmp_path, shots):
    tab(page, "6 Classify")
    files = make_images(tmp_path)
    z = zip_with_escaping_member(tmp_path, files[0])
    page.locator("#classify-files input[type=file]").set_input_files([str(f) for f in files] + [str(z)])
    page.wait_for_timeout(1500)
    page.locator("#classify-run").click()
    msg = wait_text(page, "#classify-msg", "scored", timeout=300_000)
    assert "3 images scored, 2 could not be read" in msg and "no trained classifier" not in msg, msg
    near(page, "#classify-run", "#classify-msg")
    assert "Not calibrated yet" in page.inner_text("#classify-note")
    assert page.locator("#classify-results img.ifs-thumb").count() == 3, "a thumbnail per image"
    assert chips_per_card(page) == [3, 3, 3]
    chip = page.locator("#classify-results .ifs-chip").first.inner_text()
    assert chip.split()[0] in ("cat", "dog", "sofa") and 0 <= float(chip.split()[-1]) <= 1
    names = page.locator("#classify-results .ifs-card .ifs-name").all_inner_texts()
    assert "photos.zip/sub/inside.png" in names and "photos.zip/../../escape.png" in names
    assert "refused" in page.locator('#classify-results .ifs-error[data-file="photos.zip/../../escape.png"]').inner_text()
    assert page.locator('#classify-results [data-kind="handcrafted"]').count() == 0
    shots(page, "classified-gallery")
    page.locator("#classify-compare input").check()
    page.wait_for_function("() => document.querySelectorAll('#classify-results [data-kind=handcrafted]').length === 3")
    type_number(page, "classify-k", "2", key="Enter")
    page.wait_for_function("() => document.querySelectorAll('#classify-results .ifs-card:not(.ifs-error)"
                           " [data-kind=tuned] .ifs-chip').length === 6")
    assert chips_per_card(page, "handcrafted") == [2, 2, 2]
    shots(page, "classified-compare-top2")

    tab(page, "7 Evaluate")
    page.locator("#eval-cancel").click()
    wait_text(page, "#eval-msg", "Nothing is running")
    csv = labelled_upload(tmp_path, files[:2])
    page.locator("#eval-files input[type=file]").set_input_files([str(csv), str(files[0]), str(files[1])])
    page.wait_for_timeout(1500)
    page.locator("#eval-run").click()
    msg = wait_text(page, "#eval-msg", "evaluated|⚠️ (?!Nothing)", timeout=300_000)
    assert "2 images evaluated (labels.csv)" in msg, msg
    assert "match no category" in msg and "llama" in msg
    near(page, "#eval-run", "#eval-msg")
    wait_text(page, "#eval-table", "mAP")
    shots(page, "evaluated-from-upload")

    tab(page, "6 Classify")
    page.locator("#classify-run").click()
    wait_text(page, "#classify-note", "calibrated on the labelled set labels.csv", timeout=300_000)
    shots(page, "classified-calibrated")


def export_names_and_reload(page, shots):
    tab(page, "8 Export")
    page.locator("#export-run").click()
    msg = wait_text(page, "#export-msg", "run 1 of this project")
    assert "3 categories" in msg
    near(page, "#export-run", "#export-msg")
    wait_text(page, "#export-snippet", "Classifier.load")
    shots(page, "exported")

    tab(page, "1 Projects")  # the summary is up to date on entering the tab
    assert "runs: 1 · classifier: yes" in wait_text(page, "#project-summary", "classifier: yes")
    field(page, "new-name").fill("names " + EVIL[0])
    field(page, "new-vocab").fill(", ".join(EVIL + ["plain"]))
    page.locator("#create-project").click()
    msg = wait_text(page, "#projects-msg", "Created project names")
    near(page, "#create-project", "#projects-msg")
    summary = wait_text(page, "#project-summary", "bold cat")
    for name in EVIL:
        assert name in msg + summary, "the name appears literally"
    assert page.locator("#project-summary img, #projects-msg img").count() == 0
    assert not page.locator("#project-summary b, #project-summary strong").filter(has_text="bold cat").count()
    shots(page, "names-as-text")
    # nothing of the previous project's results or messages stays
    for label, selectors in (("8 Export", ["#export-msg"]), ("7 Evaluate", ["#eval-msg"]),
                             ("6 Classify", ["#classify-msg", "#classify-note", "#classify-results"]),
                             ("5 Train", ["#train-status"]), ("3 Sentences", ["#sent-msg"]),
                             ("2 Knowledge", ["#kn-cat-msg", "#knowledge-msg"])):
        tab(page, label)
        for sel in selectors:
            page.wait_for_function("(sel) => { const el = document.querySelector(sel);"
                                   " return el && !el.innerText.trim(); }", arg=sel, timeout=10_000)
    tab(page, "4 Graph")
    page.wait_for_function("() => [...document.querySelectorAll('#graph-plot text')]"
                           ".some(t => t.textContent === '<b>bold cat</b>')")
    assert page.locator("#graph-plot img").count() == 0
    shots(page, "graph-names-as-text")

    page.reload()
    page.wait_for_selector("#create-project")
    assert EVIL[1] in wait_text(page, "#project-summary", "categories"), "the open project reopens"
    shots(page, "after-reload")


def test_every_tab(app_server, browser, tmp_path, shots):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(app_server["url"])
    page.wait_for_selector("#create-project")
    field(page, "new-name").fill("tabs pets")
    field(page, "new-vocab").fill("cat, dog, sofa")
    page.locator("#create-project").click()
    assert "3 categories" in wait_text(page, "#projects-msg", "Created project")
    wait_text(page, "#project-summary", "tabs pets")
    shots(page, "project-created")
    knowledge_and_sentences(page, app_server, shots)
    graph_and_train(page, shots)
    classify_and_evaluate(page, tmp_path, shots)
    export_names_and_reload(page, shots)
    page.close()
