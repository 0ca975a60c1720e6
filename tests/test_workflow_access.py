"""Ownership in the workflow itself (issue 11, finding 1): every project action takes the visitor
and refuses a project it does not own, before doing anything; rows named by id (a sentence, a run)
must belong to the project named."""
import inspect

import pytest

from engine import workflow as wf


def _project_actions():
    out = []
    for name in wf.__all__:
        fn = getattr(wf, name, None)
        if not inspect.isfunction(fn):
            continue
        params = list(inspect.signature(fn).parameters)
        if params[:2] == ["store", "project_id"] and name != "require_owner":  # the check itself
            out.append(name)
    return sorted(out)


ACTIONS = _project_actions()


def test_there_are_project_actions():
    assert {"rename_project", "delete_project", "export_project", "train_project", "predict_files",
            "evaluate_project", "list_sentences", "update_sentence", "delete_sentence", "graph_data",
            "project_info", "generate_knowledge"} <= set(ACTIONS)


@pytest.fixture
def store(tmp_path):
    s = wf.open_store(tmp_path / "s.db")
    pid = wf.create_project(s, "mine", "cat, dog")
    wf.set_owner(s, pid, "owner")
    s.replace_sentences(pid, [dict(text="a cat and a dog", labels=["cat", "dog"], source="t")])
    yield s, pid
    s.close()


def _snapshot(s, pid):
    p = s.get_project(pid)
    return (p.name, p.settings, [c.name for c in s.list_categories(pid)],
            [(x.text, x.enabled) for x in s.list_sentences(pid)], len(s.list_runs(pid)))


@pytest.mark.parametrize("action", ACTIONS)
def test_every_project_action_refuses_another_visitor(store, action):
    s, pid = store
    fn = getattr(wf, action)
    sig = inspect.signature(fn)
    assert "visitor" in sig.parameters, f"{action} does not take the visitor"
    required = [p for n, p in list(sig.parameters.items())[2:]
                if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.POSITIONAL_ONLY)]
    before = _snapshot(s, pid)
    for visitor in ("intruder", ""):
        with pytest.raises(wf.NotYoursError, match="not one of your projects"):
            fn(s, pid, *[None] * len(required), visitor=visitor)
    with pytest.raises(wf.NotYoursError):  # an id that does not exist answers the same
        fn(s, pid + 100, *[None] * len(required), visitor="owner")
    assert _snapshot(s, pid) == before


def test_the_owner_and_the_command_line_pass(store):
    s, pid = store
    assert wf.project_info(s, pid, visitor="owner")["name"] == "mine"
    assert wf.project_info(s, pid)["name"] == "mine"  # visitor None: no shared studio, no check


def test_a_row_of_another_project_is_refused(store):
    s, pid = store
    other = wf.create_project(s, "theirs", "cat")
    wf.set_owner(s, other, "someone else")
    s.replace_sentences(other, [dict(text="their sentence", labels=["cat"], source="t")])
    theirs = s.list_sentences(other)[0].id
    with pytest.raises(wf.NotYoursError):
        wf.update_sentence(s, pid, theirs, "mine now", ["cat"], True, visitor="owner")
    with pytest.raises(wf.NotYoursError):
        wf.delete_sentence(s, pid, theirs, visitor="owner")
    run = s.create_run(other, {"x": 1})
    with pytest.raises(wf.NotYoursError):
        wf.run_history(s, pid, run, visitor="owner")
    assert s.list_sentences(other)[0].text == "their sentence"


def test_borrowing_another_visitors_project_is_refused_and_names_no_one_elses(store):
    """Training on a bigger vocabulary borrows sentences from a project: only from one of the same
    visitor's, and the message for an unknown one lists only theirs (no other project's name)."""
    s, pid = store
    other = wf.create_project(s, "their secret project", "horse, sheep")
    wf.set_owner(s, other, "someone else")
    s.replace_sentences(other, [dict(text="a horse beside a sheep", labels=["horse", "sheep"], source="t")])
    for ref in (str(other), "their secret project"):
        with pytest.raises(wf.WorkflowError) as err:
            wf.training_vocabulary(s, pid, [ref], visitor="owner")
        assert f"{other}:their" not in str(err.value) and f"{pid}:mine" in str(err.value)
    mine2 = wf.create_project(s, "mine too", "horse")
    wf.set_owner(s, mine2, "owner")
    s.replace_sentences(mine2, [dict(text="a brown horse in a field", labels=["horse"], source="t")])
    own, grown = wf.training_vocabulary(s, pid, ["mine too"], visitor="owner")
    assert "horse" in grown.categories and "horse" not in own.categories
    _, grown = wf.training_vocabulary(s, pid, [str(other)])  # the command line (no visitor) may borrow any
    assert "sheep" in grown.categories
