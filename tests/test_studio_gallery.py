"""studio.gallery and the escaping in studio.common: cards with thumbnails and chips, every name
shown as text; engine.thumbnails makes the thumbnails."""
import re

from PIL import Image

from engine.thumbnails import thumbnail_uri
from studio import gallery
from studio.common import html_text, md, plot_text

EVIL = ["<b>bold cat</b>", "<img src=x>", "a*b_[c](d)", "# head"]


def test_markdown_escaping_shows_names_literally():
    # every character of the name survives as text: markup characters are escaped
    assert md("<b>bold cat</b>") == "&lt;b&gt;bold cat&lt;/b&gt;"
    assert md("a*b_[c](d)") == r"a\*b\_\[c\](d)"
    assert md("`x` ~y~ $$z$$ | w") == r"\`x\` \~y\~ \$\$z\$\$ \| w"
    assert md("file.pt: no (such) file") == "file.pt: no (such) file"
    assert md("# head") == r"\# head"
    assert md("two\nlines") == "two lines"
    assert html_text('<img src=x onerror="y">') == "&lt;img src=x onerror=&quot;y&quot;&gt;"
    assert plot_text("<b>x</b> & y") == "&lt;b&gt;x&lt;/b&gt; &amp; y"


def test_cards_have_thumbnails_chips_and_escaped_names(tmp_path):
    img = tmp_path / "orange.png"
    Image.new("RGB", (300, 200), (200, 120, 40)).save(img)
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    cards = [
        {"name": "set.zip/sub/<b>orange</b>.png", "thumb": thumbnail_uri(img), "error": None,
         "chips": {"tuned": [(EVIL[0], 0.82, True), (EVIL[1], 0.1, False)],
                   "handcrafted": [(EVIL[1], 0.5, False)]}},
        {"name": "notes.txt", "thumb": thumbnail_uri(bad), "error": "not an image (<unknown>)", "chips": {}},
    ]
    html = gallery.gallery_html(cards, ["tuned", "handcrafted"])
    assert html.count('class="ifs-thumb" src="data:image/jpeg;base64,') == 1
    assert "<b>bold cat</b>" not in html and "<img src=x>" not in html
    assert "&lt;b&gt;bold cat&lt;/b&gt; 0.82" in html and "&lt;img src=x&gt; 0.10" in html
    assert 'data-file="set.zip/sub/&lt;b&gt;orange&lt;/b&gt;.png"' in html
    assert re.search(r'class="ifs-chip ifs-on" data-label="&lt;b&gt;bold cat&lt;/b&gt;"', html)
    assert 'data-kind="handcrafted"' in html and "hand-crafted prompts" in html
    assert "not an image (&lt;unknown&gt;)" in html
    # the hand-crafted row only on demand
    assert 'data-kind="handcrafted"' not in gallery.gallery_html(cards, ["tuned"])


def test_thumbnail_of_a_non_image_is_none(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"nope")
    assert thumbnail_uri(bad) is None
    assert gallery.gallery_html([], ["tuned"]) == ""
