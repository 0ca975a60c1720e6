"""Every tab of the studio in headless Chromium, with no LLM in the loop: the knowledge (sentences
and attributes) is written into the app's database by a second connection, then the header's
refresh redraws every tab (the layout's loop over the tabs' outputs/refresh). Checks each tab's
redraw, the Cancel buttons' wiring (nothing running), one short training run, classify, export,
and a reload that reopens the project."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.e2e.test_studio_e2e import field, make_images, tab, wait_text

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


def test_every_tab(app_server, browser, tmp_path):
    from engine.storage import Store
    from tests.test_studio_handlers import write_corpus

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(app_server["url"])
    page.wait_for_selector("#create-project")
    field(page, "new-name").fill("tabs pets")
    field(page, "new-vocab").fill("cat, dog, sofa")
    page.locator("#create-project").click()
    assert "3 categories" in wait_text(page, "#projects-msg", "Created project")
    wait_text(page, "#project-summary", "tabs pets")
    tab(page, "2 Knowledge")
    assert page.locator("#ks-steps label").count() >= 2
    page.locator("#cancel-knowledge").click()
    wait_text(page, "#knowledge-msg", "Nothing is running")
    # knowledge written into the same database by another connection, then the redraw
    with Store(app_server["tmp"] / "studio.sqlite") as store:
        write_corpus(SimpleNamespace(store=store), store.find_project("tabs pets").id)
    page.get_by_role("button", name="Refresh list").click()
    page.wait_for_selector("#kn-keep input[type=checkbox]", timeout=60_000)
    box = page.locator("#kn-keep input[type=checkbox]").first
    assert box.is_checked()
    box.uncheck()
    page.locator("#save-category").click()
    wait_text(page, "#kn-cat-msg", "Saved")
    tab(page, "3 Sentences")
    wait_text(page, "#sent-table", "sofa")
    wait_text(page, "#sent-counts", "cat")
    tab(page, "4 Graph")
    wait_text(page, "#graph-cliques", "edges")
    tab(page, "5 Train")
    wait_text(page, "#train-device", "CPU|CUDA")
    page.locator("#train-cancel").click()
    wait_text(page, "#train-status", "Nothing is running")
    field(page, "tc-epochs").fill("1")
    field(page, "tc-epochs").press("Tab")
    page.locator("#train-start").click()
    wait_text(page, "#train-status", "Loading|Step|Trained", timeout=300_000)
    status = wait_text(page, "#train-status", "Trained|⚠️", timeout=600_000)
    assert "Trained" in status, status
    wait_text(page, "#train-runs", "done")
    tab(page, "6 Classify")
    files = make_images(tmp_path)
    page.locator("#classify-files input[type=file]").set_input_files([str(f) for f in files])
    page.wait_for_timeout(1500)
    page.locator("#classify-run").click()
    msg = wait_text(page, "#classify-msg", "scored", timeout=300_000)
    assert "2 images scored" in msg, msg
    tab(page, "7 Evaluate")
    page.get_by_role("button", name="Cancel").last.click()
    wait_text(page, "#eval-msg", "Nothing is running")
    tab(page, "8 Export")
    page.locator("#export-run").click()
    wait_text(page, "#export-msg", "Classifier of 3 categories")
    page.reload()
    page.wait_for_selector("#create-project")
    wait_text(page, "#project-summary", "tabs pets")
