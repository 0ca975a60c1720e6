"""studio.figures: the figure builders give the traces the studio shows."""
import math

from studio import figures


def test_circle_positions_are_on_unit_circle_and_stable():
    pos = figures.circle_positions(["a", "b", "c", "d"])
    assert pos == figures.circle_positions(["a", "b", "c", "d"])
    for x, y in pos.values():
        assert math.isclose(x * x + y * y, 1.0)
    assert pos["a"] == (0.0, 1.0)


def test_graph_figure_colours_by_super_and_highlights_cliques():
    cats = ["dog", "cat", "sofa", "car"]
    fig = figures.graph_figure(
        cats, edges=[("dog", "cat"), ("cat", "sofa"), ("dog", "sofa"), ("car", "dog")],
        weights={("dog", "cat"): 10, ("sofa", "cat"): 5, ("dog", "sofa"): 2, ("car", "dog"): 1},
        super_of={"dog": "animal", "cat": "animal", "sofa": "furniture"},
        cliques=[["dog", "cat", "sofa"]], added=[("car", "dog")],
    )
    edges = [t for t in fig.data if t.name.startswith("edge:")]
    nodes = [t for t in fig.data if not t.name.startswith("edge:")]
    assert len(edges) == 4
    # one node trace per super-category (car has none: its own group)
    assert sorted(t.name for t in nodes) == ["animal", "car", "furniture"]
    by = {t.name: t for t in edges}
    assert by["edge:dog|cat"].line.color == "#d62728"          # in the clique
    assert by["edge:car|dog"].line.color == "#9e9e9e"          # not in a clique
    assert by["edge:car|dog"].line.dash == "dash"              # user-added
    assert by["edge:dog|cat"].line.width > by["edge:dog|sofa"].line.width  # width by weight
    assert by["edge:cat|sofa"].text.endswith(": 5")            # weight found in either order


def test_graph_figure_empty_vocabulary_says_so():
    fig = figures.graph_figure([], edges=[])
    assert "No categories" in fig.layout.annotations[0].text


def test_loss_figure_one_line_per_loss_present():
    hist = [{"step": i, "losses": {"total": 1.0 / (i + 1), "rank_global": 0.5, "order_local": None}}
            for i in range(5)]
    fig = figures.loss_figure(hist)
    assert [t.name for t in fig.data] == ["total", "rank_global"]
    assert list(fig.data[0].x) == [0, 1, 2, 3, 4]
    assert fig.data[0].y[-1] == 0.2
    assert "No loss" in figures.loss_figure([]).layout.annotations[0].text


def test_score_bars_best_on_top_with_baseline_and_threshold():
    fig = figures.score_bars([("dog", 0.9), ("cat", 0.5)], baseline={"dog": 0.3, "cat": 0.4},
                             threshold=0.6)
    tuned, base = fig.data
    assert list(tuned.y) == ["cat", "dog"] and list(tuned.x) == [0.5, 0.9]
    assert list(base.x) == [0.4, 0.3]
    assert fig.layout.shapes[0].x0 == 0.6


def test_ap_bars_keep_missing_categories_as_gaps():
    fig = figures.ap_bars({"dog": 80.0, "cat": None}, {"dog": 60.0, "cat": None})
    assert list(fig.data[0].x) == ["dog", "cat"]
    assert fig.data[0].y[1] is None and fig.data[1].y[0] == 60.0


def test_names_reach_plotly_escaped():
    cats = ["<b>bold cat</b>", "<img src=x>"]
    fig = figures.graph_figure(cats, edges=[tuple(cats)], weights={tuple(cats): 3})
    nodes = [t for t in fig.data if not t.name.startswith("edge:")]
    texts = [x for t in nodes for x in t.text]
    assert "&lt;b&gt;bold cat&lt;/b&gt;" in texts and "&lt;img src=x&gt;" in texts
    assert not any("<" in x for x in texts)
    bars = figures.score_bars([("<b>bold cat</b>", 0.4)], {"<b>bold cat</b>": 0.2}, title="<i>x.png</i>")
    assert list(bars.data[0].y) == ["&lt;b&gt;bold cat&lt;/b&gt;"] and bars.data[1].x[0] == 0.2
    assert "<i>" not in bars.layout.title.text
    ap = figures.ap_bars({"<img src=x>": 50.0})
    assert list(ap.data[0].x) == ["&lt;img src=x&gt;"]


def test_a_large_vocabulary_is_capped_with_a_note_and_no_long_legend():
    cats = [f"c{i}" for i in range(1000)]
    edges = [(f"c{i}", f"c{i + 1}") for i in range(0, 999)]
    weights = {e: (50 if e[0] == "c500" else 1) for e in edges}
    super_of = {c: f"group{i % 40}" for i, c in enumerate(cats)}
    fig = figures.graph_figure(cats, edges, weights, super_of)
    nodes = [t for t in fig.data if not t.name.startswith("edge:")]
    drawn = [x for t in nodes for x in t.text]
    assert len(drawn) == figures.MAX_NODES
    assert "c500" in drawn and "c501" in drawn  # the heaviest edge's ends are among the kept
    assert fig.layout.showlegend is False and not any(t.showlegend for t in nodes)
    assert "Showing 60 of 1000 categories" in fig.layout.annotations[0].text
    # one category's neighbourhood: it sits in the middle with its neighbours around it
    fig = figures.graph_figure(cats, edges, weights, super_of, focus="c500")
    nodes = [t for t in fig.data if not t.name.startswith("edge:")]
    drawn = {x: (t.x[i], t.y[i]) for t in nodes for i, x in enumerate(t.text)}
    assert set(drawn) == {"c499", "c500", "c501"} and drawn["c500"] == (0.0, 0.0)
    assert "c500 and its strongest neighbours" in fig.layout.annotations[0].text


def test_order_losses_get_their_own_axis():
    hist = [{"step": i, "losses": {"total": 30.0 - i, "rank_global": 14.0, "order_global": 0.01 * i,
                                   "order_local": 0.02}} for i in range(4)]
    fig = figures.loss_figure(hist)
    by = {t.name: t for t in fig.data}
    assert by["total"].yaxis == "y" and by["order_global"].yaxis == "y2" and by["order_local"].yaxis == "y2"
    assert fig.layout.yaxis2.title.text == "order loss"
