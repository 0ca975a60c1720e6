"""The whole way through the studio in headless Chromium: new project from 3 names, knowledge with
small counts (recorded real answers of the bundled LLM, tests/llm_replay.py), edit one attribute,
train one short epoch while loss points appear, classify two generated images and a text file,
reload and find the project intact.

Screenshots of every step: artifacts/e2e/ (README, "The studio")."""
from __future__ import annotations

import re

import pytest
from PIL import Image, ImageDraw

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

VOCAB = "cat, dog, sofa"
PROJECT = "E2E pets"
KEEP_STEPS = ("attributes", "coarse_sentences")


def field(page, elem_id):
    return page.locator(f"#{elem_id}").locator("textarea, input:not([type=file])").first


def tab(page, label):
    page.get_by_role("tab", name=re.compile(label)).click()


def wait_text(page, selector, pattern, timeout=120_000):
    page.wait_for_function(
        "([sel, pat]) => { const el = document.querySelector(sel);"
        " return el && new RegExp(pat).test(el.innerText); }",
        arg=[selector, pattern], timeout=timeout)
    return page.locator(selector).inner_text()


def make_images(folder):
    a = Image.new("RGB", (96, 96), (200, 120, 40))
    ImageDraw.Draw(a).ellipse((20, 20, 76, 76), fill=(30, 30, 30))
    b = Image.new("RGB", (120, 80), (40, 90, 200))
    ImageDraw.Draw(b).rectangle((10, 10, 60, 70), fill=(240, 240, 240))
    pa, pb = folder / "orange.png", folder / "blue.jpg"
    a.save(pa)
    b.save(pb)
    txt = folder / "notes.txt"
    txt.write_text("this is not an image\n")
    return [pa, pb, txt]


def test_studio_end_to_end(app_server, browser, shots):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(app_server["url"])
    page.wait_for_selector("#create-project")
    shots(page, "start")

    # 1. a project from a 3-category vocabulary
    field(page, "new-name").fill(PROJECT)
    field(page, "new-vocab").fill(VOCAB)
    page.locator("#create-project").click()
    msg = wait_text(page, "#projects-msg", "Created project")
    assert "3 categories" in msg
    wait_text(page, "#project-summary", PROJECT)
    shots(page, "project-created")

    # 2. knowledge with small counts
    tab(page, "2 Knowledge")
    # two question steps (attributes, then sentences from them), one attribute per category
    steps = page.locator("#ks-steps label")
    assert steps.count() >= 2
    for i in range(steps.count()):
        label = steps.nth(i)
        box = label.locator("input[type=checkbox]")
        if label.inner_text().strip() not in KEEP_STEPS and box.is_checked():
            box.uncheck()
    counts = page.locator("[id^=ks-n_] input[type=number]")
    assert counts.count() > 0, "the knowledge counts are shown"
    for i in range(counts.count()):
        counts.nth(i).fill("1")
        counts.nth(i).press("Tab")
    field(page, "ks-n_coarse_sentences").fill("3")
    field(page, "ks-n_coarse_sentences").press("Tab")
    page.locator("#gen-knowledge").click()
    wait_text(page, "#knowledge-msg", "Starting|planned questions done|Knowledge ready", timeout=60_000)
    shots(page, "knowledge-progress")
    wait_text(page, "#knowledge-msg", "planned questions done|Knowledge ready|⚠️", timeout=600_000)
    shots(page, "knowledge-answers")
    msg = wait_text(page, "#knowledge-msg", "Knowledge ready|⚠️", timeout=900_000)
    assert "Knowledge ready" in msg, msg
    shots(page, "knowledge-ready")

    # edit one attribute of the first category: untick "kept" on its first attribute
    page.wait_for_selector("#kn-keep input[type=checkbox]", timeout=60_000)
    box = page.locator("#kn-keep input[type=checkbox]").first
    assert box.is_checked()
    dropped = page.locator("#kn-keep label").first.inner_text().strip()
    box.uncheck()
    page.locator("#save-category").click()
    wait_text(page, "#kn-cat-msg", "Saved")
    shots(page, "attribute-edited")

    # 3. sentences exist and are counted
    tab(page, "3 Sentences")
    page.locator("#sent-show").click()
    wait_text(page, "#sent-table", "\\w+")
    shots(page, "sentences")

    # 5. train one short epoch; loss points appear while it runs
    tab(page, "5 Train")
    wait_text(page, "#train-device", "CPU|CUDA")
    field(page, "tc-epochs").fill("1")
    field(page, "tc-epochs").press("Tab")
    field(page, "tc-batch_size").fill("2")  # a few steps in the one epoch
    field(page, "tc-batch_size").press("Tab")
    page.locator("#train-start").click()
    page.wait_for_function(
        "() => { const p = document.querySelector('#train-plot .js-plotly-plot');"
        " return p && p.data && p.data.length > 0 && p.data[0].x && p.data[0].x.length > 0; }",
        timeout=300_000)
    shots(page, "training-live-losses")
    status = wait_text(page, "#train-status", "Trained|⚠️", timeout=600_000)
    assert "Trained" in status, status
    n_points = page.evaluate("() => document.querySelector('#train-plot .js-plotly-plot').data[0].x.length")
    assert n_points >= 2, "one loss point per step"
    shots(page, "trained")

    # 6. classify two generated images and a text file
    tab(page, "6 Classify")
    files = make_images(app_server["tmp"])
    page.locator("#classify-files input[type=file]").set_input_files([str(f) for f in files])
    page.wait_for_timeout(1500)
    page.locator("#classify-run").click()
    wait_text(page, "#classify-msg", "images scored", timeout=300_000)
    cards = page.locator("#classify-results .ifs-card")
    assert cards.count() == 3
    assert page.locator("#classify-results img.ifs-thumb").count() == 2, "a thumbnail per image"
    labels = page.locator("#classify-results .ifs-card:not(.ifs-error) .ifs-chip")
    assert labels.count() == 2 * 3, "top-3 label chips for each of the two images"
    names = {labels.nth(i).get_attribute("data-label") for i in range(labels.count())}
    assert names <= {"cat", "dog", "sofa"}
    error = page.locator("#classify-results .ifs-error")
    assert error.count() == 1 and "notes.txt" in error.inner_text()
    assert page.locator("#classify-results .ifs-error-text").inner_text().strip()
    shots(page, "classified")

    # reload: the project is still open, trained, and its edit kept
    page.reload()
    page.wait_for_selector("#create-project")
    summary = wait_text(page, "#project-summary", PROJECT)
    assert "3 categories" in summary and "classifier: yes" in summary
    tab(page, "2 Knowledge")
    page.wait_for_selector("#kn-keep input[type=checkbox]", timeout=60_000)
    first = page.locator("#kn-keep label").first
    assert first.inner_text().strip() == dropped
    assert not first.locator("input[type=checkbox]").is_checked(), "the attribute edit survived the reload"
    tab(page, "5 Train")
    wait_text(page, "#train-runs", "done")
    shots(page, "after-reload")
    page.close()
