"""The label readers on hostile input (issue 11): a hypothesis fuzz of COCO JSON shapes, CSV text
and VOC split files / annotations; each read ends in a LabelledSet or a one-sentence
DatasetError, never another exception."""
import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from engine.datasets import DatasetError, read_coco, read_csv, read_labelled_set, read_voc

_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
                     st.floats(), st.text(max_size=10))
_json = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                     max_leaves=16)
_image = st.fixed_dictionaries({}, optional={"id": _json, "file_name": _json, "width": _json})
_category = st.fixed_dictionaries({}, optional={"id": _json, "name": _json})
_annotation = st.fixed_dictionaries({}, optional={"image_id": _json, "category_id": _json})
_coco = st.one_of(_json, st.fixed_dictionaries({}, optional={
    "images": st.one_of(_json, st.lists(st.one_of(_image, _json), max_size=3)),
    "categories": st.one_of(_json, st.lists(st.one_of(_category, _json), max_size=3)),
    "annotations": st.one_of(_json, st.lists(st.one_of(_annotation, _json), max_size=3)),
}))
FUZZ = settings(max_examples=80, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _read(fn, *args, **kw):
    try:
        ds = fn(*args, **kw)
    except DatasetError as exc:
        assert "\n" not in str(exc).strip() or "Traceback" not in str(exc)
        return None
    assert len(ds.images) == ds.targets.shape[0] and ds.targets.shape[1] == len(ds.categories)
    return ds


@FUZZ
@given(data=_coco)
def test_fuzz_coco(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("coco")
    path = d / "instances.json"
    path.write_text(json.dumps(data))
    _read(read_coco, path)
    _read(read_coco, path, categories=["cat", "dog"])


@FUZZ
@given(text=st.text(max_size=300), raw=st.binary(max_size=200))
def test_fuzz_csv(tmp_path_factory, text, raw):
    d = tmp_path_factory.mktemp("csv")
    (d / "a.csv").write_text(text, encoding="utf-8", errors="surrogatepass")
    _read(read_csv, d / "a.csv")
    (d / "b.tsv").write_bytes(raw)
    _read(read_labelled_set, d / "b.tsv", categories=["cat"])


@FUZZ
@given(split=st.binary(max_size=120), xml=st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_fuzz_voc(tmp_path_factory, split, xml):
    root = tmp_path_factory.mktemp("voc") / "VOC2007"
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "test.txt").write_bytes(split)
    data = xml if isinstance(xml, bytes) else xml.encode("utf-8", "surrogatepass")
    (root / "Annotations" / "000001.xml").write_bytes(data)
    _read(read_voc, root)
    (root / "ImageSets" / "Main" / "test.txt").write_text("000001\n")
    _read(read_voc, root, categories=["cat"])


@pytest.mark.parametrize("content", [
    b'filename,labels\n"' + b"a" * 140_000 + b'",cat\n',
    b"file\x00name,cat\n",
    ("x" * 5000 + ",cat\n").encode(),   # a name too long for the file system
])
def test_csv_edge_cases(tmp_path, content):
    (tmp_path / "l.csv").write_bytes(content)
    _read(read_csv, tmp_path / "l.csv")


def test_voc_split_not_utf8_is_one_sentence(tmp_path):
    root = tmp_path / "VOC2007"
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "test.txt").write_bytes(b"\xff\xfe0\x001\x00\n")
    with pytest.raises(DatasetError, match="UTF-8"):
        read_voc(root)


def test_coco_deep_json(tmp_path):
    (tmp_path / "c.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(DatasetError):
        read_coco(tmp_path / "c.json")
