"""engine.uploads: zips unpacked member by member (a refused member reported, the rest kept with
their folders), images to score from uploads, and labelled sets from one zip or a label file plus
its images - with messages that say where the images were looked for."""
import zipfile

import pytest
from PIL import Image

from engine.datasets import DatasetError, read_labelled_set, require_images
from engine.uploads import (UploadError, UploadLimits, expand_image_uploads, extract_zip,
                            labelled_set_from_uploads)

CATS = ["cat", "dog", "sofa"]


def png(path, colour=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path)
    return path


def image_bytes(tmp_path, name="x.png"):
    return png(tmp_path / "_src" / name).read_bytes()


def test_a_traversal_member_is_refused_and_the_others_kept_with_their_folders(tmp_path):
    z = tmp_path / "photos.zip"
    data = image_bytes(tmp_path)
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("sub/cats.png", data)
        zf.writestr("top.png", data)
        zf.writestr("../evil.png", data)
        zf.writestr("/abs.png", data)
    ex = extract_zip(z, tmp_path / "out")
    assert sorted(p.as_posix() for p in ex.files) == ["sub/cats.png", "top.png"]
    assert (tmp_path / "out" / "sub" / "cats.png").is_file()
    assert not (tmp_path / "evil.png").exists()
    assert [m for m, _ in ex.refused] == ["../evil.png", "/abs.png"]
    assert all(r.startswith("refused:") for _, r in ex.refused)


def test_a_zip_over_the_limits_is_refused_whole(tmp_path):
    z = tmp_path / "many.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for i in range(4):
            zf.writestr(f"{i}.txt", "x")
    with pytest.raises(UploadError, match="holds 4 files; the limit is 3"):
        extract_zip(z, tmp_path / "out", UploadLimits(max_members=3))
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(UploadError, match="bad.zip is not a readable zip"):
        extract_zip(bad, tmp_path / "out2")


def test_image_uploads_keep_zip_paths_and_report_refusals(tmp_path):
    loose = png(tmp_path / "up1" / "loose.png")
    z = tmp_path / "up2" / "set.zip"
    z.parent.mkdir()
    data = image_bytes(tmp_path)
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("sub/cats.png", data)
        zf.writestr("readme.txt", "not scored: not an image extension inside a zip")
        zf.writestr("../../escape.png", data)
    up = expand_image_uploads([str(loose), str(z)], tmp_path / "work")
    assert up.names == ["loose.png", "set.zip/sub/cats.png"]
    assert [f.is_file() for f in up.files] == [True, True]
    assert up.refused and up.refused[0][0] == "set.zip/../../escape.png"


def write_csv(path, rows, sep=","):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("filename" + sep + "labels\n" + "".join(f"{a}{sep}{b}\n" for a, b in rows))
    return path


def test_labelled_set_from_a_csv_plus_uploaded_images(tmp_path):
    # each upload sits in its own temporary folder, as a web server stores them
    a = png(tmp_path / "u1" / "a.png")
    b = png(tmp_path / "u2" / "b.png")
    csv = write_csv(tmp_path / "u3" / "labels.tsv", [("photos/a.png", "cat;dog"), ("b.png", "Sofa|llama")],
                    sep="\t")
    data = labelled_set_from_uploads([str(csv), str(a), str(b)], tmp_path / "work", CATS)
    assert [p.name for p in data.images] == ["a.png", "b.png"] and all(p.exists() for p in data.images)
    assert data.targets.tolist() == [[1, 1, 0], [0, 0, 1]]
    assert data.unmatched == ["llama"]


def test_labelled_set_from_one_zip(tmp_path):
    z = tmp_path / "voc-like.zip"
    data = image_bytes(tmp_path)
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("set/labels.csv", "file,labels\nimgs/1.png,cat\nimgs/2.png,\"dog,sofa\"\n")
        zf.writestr("set/imgs/1.png", data)
        zf.writestr("set/imgs/2.png", data)
    got = labelled_set_from_uploads([str(z)], tmp_path / "work", CATS)
    assert len(got) == 2 and all(p.exists() for p in got.images)
    assert got.targets.tolist() == [[1, 0, 0], [0, 1, 1]]


def test_missing_images_name_where_they_were_looked_for(tmp_path):
    csv = write_csv(tmp_path / "u1" / "labels.csv", [("a.png", "cat")])
    other = png(tmp_path / "u2" / "other.png")
    with pytest.raises(DatasetError, match=r"None of the 1 images listed in labels.csv is in the 1 "
                                           r"uploaded images \(first one looked for: a.png\)"):
        labelled_set_from_uploads([str(csv), str(other)], tmp_path / "work", CATS)
    # the server-path route names the folder it searched
    local = write_csv(tmp_path / "local" / "labels.csv", [("a.png", "cat")])
    data = read_labelled_set(local, image_dir=tmp_path / "nowhere", categories=CATS)
    with pytest.raises(DatasetError, match=f"is in the folder {tmp_path / 'nowhere'}"):
        require_images(data)


def test_bad_upload_combinations_say_what_to_upload(tmp_path):
    with pytest.raises(UploadError, match="Upload a zip"):
        labelled_set_from_uploads([], tmp_path, CATS)
    a = png(tmp_path / "a.png")
    with pytest.raises(UploadError, match="exactly one label file"):
        labelled_set_from_uploads([str(a)], tmp_path / "w", CATS)
    z = tmp_path / "two.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("a.csv", "a.png,cat\n")
        zf.writestr("b.csv", "a.png,cat\n")
    with pytest.raises(UploadError, match="label files found: a.csv, b.csv"):
        labelled_set_from_uploads([str(z)], tmp_path / "w2", CATS)
