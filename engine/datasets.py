"""Labelled image sets and a streaming image loader.

Two jobs, both plain data plumbing (no model code):

1. **Label readers** turn a labelled set on disk into a :class:`LabelledSet` (image paths, category
   names, multi-hot targets ``[M, N]``) for evaluation (METHOD.md section 6):

   - :func:`read_voc` - the PASCAL VOC 2007 folder layout: ``Annotations/*.xml``,
     ``ImageSets/Main/{split}.txt``, ``JPEGImages/``. An image is positive for every category with at
     least one object box. Objects marked ``difficult`` are left out by default, the standard VOC
     protocol and the authors' (METHOD.md section 7): an image whose only boxes of a category are
     difficult is not a positive of it. ``VocOptions.include_difficult`` counts them.
   - :func:`read_coco` - a COCO ``instances_*.json`` plus its image folder. An image is positive for
     every category with at least one annotation (crowd annotations included).
   - :func:`read_csv` - a CSV (or TSV) of ``filename,labels``; labels in the second field are split
     on ``;``, ``|`` or ``,`` (a quoted field) - or every further column is one label.

   :func:`read_labelled_set` picks the reader from what the path is.  Dataset category names are
   matched to a project's categories by a loose key (case, spaces, ``_`` and ``-`` ignored:
   VOC's ``diningtable`` meets "dining table") plus optional aliases (synonyms).

2. **Streaming**: :func:`list_images` expands folders (recursively) and files into a sorted list;
   :class:`ImageFileDataset` decodes and preprocesses one file per item inside DataLoader worker
   processes, returning an error string instead of raising for a corrupt or unreadable file, and
   :func:`collate_images` drops those from the batch and reports them. Nothing holds more than
   ``workers * prefetch + 1`` batches, so memory stays flat however many images there are.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import UnidentifiedImageError

from engine.errors import EngineError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class DatasetError(EngineError, ValueError):
    """A labelled set that cannot be read; the message says which file and why."""


# --------------------------------------------------------------------------------------------------
# Labelled sets
# --------------------------------------------------------------------------------------------------

@dataclass
class LabelledSet:
    """Images with multi-hot labels over ``categories``.

    ``targets[m, n] == 1`` when image ``m`` shows category ``n``. ``unmatched`` lists dataset label
    names that matched no category (they are left out of the targets, not an error).
    """

    images: list[Path]
    categories: list[str]
    targets: np.ndarray
    kind: str = ""
    source: str = ""
    unmatched: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, keep: Sequence[int]) -> "LabelledSet":
        keep = list(keep)
        return LabelledSet([self.images[i] for i in keep], list(self.categories),
                           self.targets[keep] if keep else self.targets[:0], self.kind, self.source,
                           list(self.unmatched))


def name_key(name: str) -> str:
    """Loose matching key of a category name: lower case, letters and digits only."""
    return re.sub(r"[^0-9a-z]+", "", str(name).lower())


class _Matcher:
    """Maps dataset label names onto the index of a project category."""

    def __init__(self, categories: Sequence[str], aliases: dict[str, Sequence[str]] | None = None):
        self.index: dict[str, int] = {}
        for i, c in enumerate(categories):
            self.index.setdefault(name_key(c), i)
        for c, names in (aliases or {}).items():
            if c in categories:
                for a in names:
                    self.index.setdefault(name_key(a), categories.index(c))
        self.unmatched: list[str] = []

    def __call__(self, label: str) -> int | None:
        i = self.index.get(name_key(label))
        if i is None and label not in self.unmatched:
            self.unmatched.append(label)
        return i


def _targets(label_lists: list[list[str]], categories: list[str], aliases) -> tuple[np.ndarray, list[str]]:
    match = _Matcher(categories, aliases)
    targets = np.zeros((len(label_lists), len(categories)), dtype=np.uint8)
    for m, labels in enumerate(label_lists):
        for lab in labels:
            n = match(lab)
            if n is not None:
                targets[m, n] = 1
    return targets, match.unmatched


def _unique(seq: Iterable[str]) -> list[str]:
    out: list[str] = []
    for s in seq:
        if s not in out:
            out.append(s)
    return out


@dataclass
class VocOptions:
    """Settings of the VOC reader."""

    split: str = "test"              # ImageSets/Main/{split}.txt; all annotations when it is missing
    include_difficult: bool = False  # objects flagged difficult count as positives (standard: no)


def read_voc(root: str | Path, categories: Sequence[str] | None = None,
             options: VocOptions | None = None, aliases: dict | None = None) -> LabelledSet:
    """Read a VOC2007-layout folder. ``categories`` None: the names found, in first-seen order."""
    options = options or VocOptions()
    root = Path(root)
    ann_dir, img_dir = root / "Annotations", root / "JPEGImages"
    if not ann_dir.is_dir():
        raise DatasetError(f"{root} is not a VOC folder: it has no Annotations/ folder.")
    split_file = root / "ImageSets" / "Main" / f"{options.split}.txt"
    if split_file.exists():
        try:
            ids = [ln.split()[0] for ln in split_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"VOC split file {split_file} cannot be read as UTF-8 text: {exc}") from exc
    else:
        ids = sorted(p.stem for p in ann_dir.glob("*.xml"))
    if not ids:
        raise DatasetError(f"{root} lists no images (split {options.split!r}).")
    images, label_lists = [], []
    for image_id in ids:
        xml_path = ann_dir / f"{image_id}.xml"
        if "/" in image_id or "\\" in image_id or image_id in (".", "..") or "\x00" in image_id:
            raise DatasetError(f"VOC split file {split_file} names {image_id!r}, which is not an image id.")
        try:
            tree = ET.parse(xml_path).getroot()
        except (OSError, ET.ParseError, ValueError) as exc:
            raise DatasetError(f"VOC annotation {xml_path} cannot be read: {exc}") from exc
        fname = (tree.findtext("filename") or f"{image_id}.jpg").strip()
        path = img_dir / fname
        if not _exists(path) and _exists(img_dir / f"{image_id}.jpg"):
            path = img_dir / f"{image_id}.jpg"
        labels = []
        for obj in tree.iter("object"):
            if not options.include_difficult and (obj.findtext("difficult") or "0").strip() == "1":
                continue
            name = (obj.findtext("name") or "").strip()
            if name:
                labels.append(name)
        images.append(path)
        label_lists.append(_unique(labels))
    cats = list(categories) if categories is not None else _unique(l for ls in label_lists for l in ls)
    targets, unmatched = _targets(label_lists, cats, aliases)
    return LabelledSet(images, cats, targets, "voc", str(root), unmatched)


def read_coco(json_path: str | Path, image_dir: str | Path | None = None,
              categories: Sequence[str] | None = None, aliases: dict | None = None) -> LabelledSet:
    """Read a COCO instances JSON. ``image_dir`` None: a folder beside the JSON that holds the
    first image (``images/``, ``val2017/``-style names from the JSON's stem, or the JSON's folder)."""
    json_path = Path(json_path)
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except RecursionError:
        raise DatasetError(f"COCO file {json_path} nests too deeply to be instances JSON.") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"COCO file {json_path} cannot be read as instances JSON: {exc}") from exc
    coco_cats, coco_images, anns = _coco_tables(data, json_path)
    image_dir = Path(image_dir) if image_dir else _guess_coco_dir(json_path, coco_images)
    labels_of: dict[int, list[str]] = {im_id: [] for im_id, _ in coco_images}
    for cat_id, im_id in anns:
        name = coco_cats.get(cat_id)
        lst = labels_of.get(im_id)
        if name is not None and lst is not None and name not in lst:
            lst.append(name)
    images = [image_dir / fname for _, fname in coco_images]
    label_lists = [labels_of[im_id] for im_id, _ in coco_images]
    cats = list(categories) if categories is not None else [coco_cats[k] for k in sorted(coco_cats)]
    targets, unmatched = _targets(label_lists, cats, aliases)
    return LabelledSet(images, cats, targets, "coco", str(json_path), unmatched)


def _coco_int(value, what: str, json_path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DatasetError(f"COCO file {json_path}: {what} must be an integer, not {value!r:.40}.")
    return value


def _coco_tables(data, json_path: Path):
    """``({category id: name}, [(image id, file name)], [(category id, image id)])`` from a parsed
    instances JSON, every key and type checked (DatasetError names the first bad one)."""
    def need(obj, key, kind, where):
        if not isinstance(obj, dict) or key not in obj:
            raise DatasetError(f"COCO file {json_path}: {where} lacks {key!r}.")
        if not isinstance(obj[key], kind):
            raise DatasetError(f"COCO file {json_path}: {where}'s {key!r} is not a {kind.__name__}.")
        return obj[key]

    cats = {}
    for c in need(data, "categories", list, "the file"):
        cats[_coco_int(need(c, "id", int, "a category"), "a category id", json_path)] = \
            need(c, "name", str, "a category")
    images, seen = [], set()
    for im in need(data, "images", list, "the file"):
        im_id = _coco_int(need(im, "id", int, "an image"), "an image id", json_path)
        fname = need(im, "file_name", str, "an image")
        if not fname or "\x00" in fname:
            raise DatasetError(f"COCO file {json_path}: image {im_id} has no usable file_name.")
        if im_id in seen:
            raise DatasetError(f"COCO file {json_path}: image id {im_id} appears twice.")
        seen.add(im_id)
        images.append((im_id, fname))
    anns = data.get("annotations", [])
    if not isinstance(anns, list):
        raise DatasetError(f"COCO file {json_path}: 'annotations' is not a list.")
    pairs = []
    for a in anns:
        if not isinstance(a, dict):
            raise DatasetError(f"COCO file {json_path}: an annotation is not an object.")
        pairs.append((_coco_int(a.get("category_id", -1), "an annotation's category_id", json_path),
                      _coco_int(a.get("image_id", -1), "an annotation's image_id", json_path)))
    return cats, images, pairs


def _guess_coco_dir(json_path: Path, coco_images: list) -> Path:
    base = json_path.parent
    stem = json_path.stem
    split = stem.split("_")[-1] if "_" in stem else stem
    candidates = [base / "images", base / split, base.parent / split, base.parent / "images", base]
    first = coco_images[0][1] if coco_images else None
    for c in candidates:
        if first and _exists(c / first):
            return c
    return base / "images" if (base / "images").is_dir() else base


def _exists(path: Path) -> bool:
    """``path.exists()`` that answers False for a name the OS refuses (too long, NUL)."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


_LABEL_SPLIT = re.compile(r"[;|,]")


def read_csv(path: str | Path, image_dir: str | Path | None = None,
             categories: Sequence[str] | None = None, aliases: dict | None = None) -> LabelledSet:
    """Read ``filename,labels`` rows (CSV, or TSV when the file has tabs). A first row whose first
    field is ``filename``/``file``/``image``/``path`` is a header. Paths are relative to
    ``image_dir`` (default: the CSV's folder, or its ``images/`` subfolder when that holds them)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"Label file {path} cannot be read: {exc}") from exc
    delim = "\t" if "\t" in text.split("\n", 1)[0] else ","
    if "\x00" in text:
        raise DatasetError(f"Label file {path} contains NUL characters; it is not a CSV of filename,labels.")
    try:
        rows = [r for r in csv.reader(text.splitlines(), delimiter=delim) if r and r[0].strip()]
    except csv.Error as exc:  # e.g. a field over csv.field_size_limit() characters
        raise DatasetError(f"Label file {path} is not a readable CSV: {exc}.") from exc
    if rows and rows[0][0].strip().lower() in ("filename", "file", "image", "path", "file_name"):
        rows = rows[1:]
    if not rows:
        raise DatasetError(f"Label file {path} has no rows of filename and labels.")
    names, label_lists = [], []
    for r in rows:
        names.append(r[0].strip())
        labels = [s.strip() for field_ in r[1:] for s in _LABEL_SPLIT.split(field_)]
        label_lists.append(_unique(s for s in labels if s))
    if image_dir is None:
        image_dir = path.parent
        if not _exists(image_dir / names[0]) and _exists(image_dir / "images" / names[0]):
            image_dir = image_dir / "images"
    image_dir = Path(image_dir)
    images = [Path(n) if os.path.isabs(n) else image_dir / n for n in names]
    cats = list(categories) if categories is not None else _unique(l for ls in label_lists for l in ls)
    targets, unmatched = _targets(label_lists, cats, aliases)
    return LabelledSet(images, cats, targets, "csv", str(path), unmatched)


def read_labelled_set(path: str | Path, image_dir: str | Path | None = None,
                      categories: Sequence[str] | None = None, aliases: dict | None = None,
                      voc: VocOptions | None = None) -> LabelledSet:
    """Pick the reader: a folder with ``Annotations/`` is VOC, a ``.json`` is COCO, else CSV/TSV."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"Labelled set {path} does not exist.")
    if path.is_dir():
        if (path / "Annotations").is_dir():
            return read_voc(path, categories, voc, aliases)
        for sub in sorted(path.iterdir()):  # e.g. VOCdevkit/VOC2007
            if (sub / "Annotations").is_dir():
                return read_voc(sub, categories, voc, aliases)
        raise DatasetError(f"{path} is a folder without Annotations/: give a VOC folder, a COCO "
                           f"JSON or a CSV of filename,labels.")
    if path.suffix.lower() == ".json":
        return read_coco(path, image_dir, categories, aliases)
    return read_csv(path, image_dir, categories, aliases)


def require_images(data: LabelledSet, where: str | None = None) -> None:
    """Raise :class:`DatasetError` when not one image of ``data`` exists, naming where they were
    looked for (``where``, else the folder(s) the label file points into)."""
    if not data.images or any(Path(p).exists() for p in data.images):
        return
    hint = "" if where else " Give the image folder that holds them."
    if where is None:
        folders = list(dict.fromkeys(str(Path(p).parent) for p in data.images))
        where = f"the folder {folders[0]}" if len(folders) == 1 else \
            f"the folders {', '.join(folders[:3])}" + (" ..." if len(folders) > 3 else "")
    raise DatasetError(f"None of the {len(data.images)} images listed in {Path(data.source).name} is in "
                       f"{where} (first one looked for: {Path(data.images[0]).name}).{hint}")


# --------------------------------------------------------------------------------------------------
# Streaming images
# --------------------------------------------------------------------------------------------------

def list_images(paths: Iterable[str | Path], extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Expand folders recursively (files with an image extension, sorted) and keep files as given
    (any extension: a named file that is not an image is reported by the loader, not dropped).
    A path that does not exist raises DatasetError."""
    out: list[Path] = []
    exts = tuple(e.lower() for e in extensions)
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = []
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames.sort()
                found.extend(Path(dirpath) / f for f in filenames if f.lower().endswith(exts))
            out.extend(sorted(found))
        elif p.exists():
            out.append(p)
        else:
            raise DatasetError(f"{p} does not exist.")
    return out


def load_rgb(path: str | Path, draft_size: int | None = None):
    """Open an image as RGB. Transparency is composited on white (a PNG's clear background is not
    black). ``draft_size`` lets JPEG decode at a reduced scale no smaller than that size (fast)."""
    from PIL import Image

    img = Image.open(path)
    if draft_size and img.format == "JPEG":
        img.draft("RGB", (draft_size, draft_size))
    img.load()
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img)
    return img.convert("RGB")


class ImageFileDataset:
    """Map-style dataset over files: item ``i`` is ``(i, tensor | None, error | None)``.

    Decoding and ``preprocess`` run in the DataLoader's worker processes. A file that cannot be
    read gives ``(i, None, "<one-line reason>")`` instead of raising.
    """

    def __init__(self, files: Sequence[str | Path], preprocess: Callable, draft_size: int | None = None):
        self.files = [str(f) for f in files]
        self.preprocess = preprocess
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        return (i, *decode_image(self.files[i], self.preprocess, self.draft_size))


def decode_image(source: str | Path | bytes, preprocess: Callable, draft_size: int | None = None):
    """``(tensor, None)`` or ``(None, "<one-line reason>")`` for a file path or a file's bytes: the
    one decoding of batch prediction (the local loader and the Ray path both call it)."""
    try:
        empty = len(source) == 0 if isinstance(source, (bytes, bytearray, memoryview)) else os.path.getsize(source) == 0
        if empty:
            return None, "empty file (0 bytes)"
        if isinstance(source, (bytes, bytearray, memoryview)):
            source = io.BytesIO(source)
        return preprocess(load_rgb(source, draft_size)), None
    except UnidentifiedImageError:
        return None, "not an image (no image format recognised in this file)"
    except Exception as exc:  # noqa: BLE001 - any decode failure is reported, never fatal
        msg = str(exc).splitlines()[0] if str(exc) else ""
        return None, f"cannot read image: {type(exc).__name__}: {msg}".rstrip(": ")


@dataclass
class ImageBatch:
    """A collated batch: ``indices[k]`` is the file index of ``pixels[k]``; ``failures`` the
    ``(index, reason)`` pairs dropped from it."""

    indices: list[int]
    pixels: object  # torch.Tensor [B, 3, H, W] or None when every item failed
    failures: list[tuple[int, str]]


def collate_images(items) -> ImageBatch:
    """Stack the good items, report the bad ones."""
    import torch

    good = [(i, t) for i, t, err in items if err is None]
    bad = [(i, err) for i, t, err in items if err is not None]
    pixels = torch.stack([t for _, t in good]) if good else None
    return ImageBatch([i for i, _ in good], pixels, bad)


@dataclass
class LoaderSettings:
    """How images stream into the model.

    ``batch_size`` images per forward pass; ``workers`` decoding processes (0 = in the main
    process); ``prefetch`` batches queued per worker; ``draft_size`` lets JPEGs decode at reduced
    scale (>= this many pixels a side; None = full decode).
    """

    batch_size: int = 32
    workers: int = 2
    prefetch: int = 2
    draft_size: int | None = None


def image_loader(files: Sequence[str | Path], preprocess: Callable, settings: LoaderSettings | None = None,
                 pin_memory: bool = False):
    """A torch DataLoader over ``files`` yielding :class:`ImageBatch` in file order."""
    from torch.utils.data import DataLoader

    s = settings or LoaderSettings()
    ds = ImageFileDataset(files, preprocess, s.draft_size)
    workers = max(0, min(int(s.workers), len(ds))) if len(ds) else 0
    kwargs = dict(num_workers=workers, collate_fn=collate_images, batch_size=max(1, int(s.batch_size)),
                  shuffle=False, pin_memory=pin_memory)
    if workers > 0:
        kwargs.update(prefetch_factor=max(1, int(s.prefetch)), persistent_workers=False)
    return DataLoader(ds, **kwargs)
