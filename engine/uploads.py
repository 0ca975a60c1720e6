"""Files a person uploads (through the studio, so they sit in temporary folders of the web server)
turned into what the engine reads: image files to score, or a labelled set to evaluate on.

- :func:`extract_zip` unpacks a zip member by member: a member that would land outside the
  target folder (an absolute path, ``..``, a link) is refused and reported while the others are
  unpacked, with their folders kept (``sub/cat.jpg`` stays ``sub/cat.jpg``). Too many members or
  too many bytes refuse the whole zip (:class:`UploadError`).
- :func:`expand_image_uploads`: uploaded files and zips -> :class:`ImageUploads` (the files to
  score, each with the name to show - its path inside its zip - and the refusals).
- :func:`labelled_set_from_uploads`: either ONE zip (holding a VOC folder, a COCO JSON with its
  images, or a CSV/TSV of filename,labels with its images), or a CSV/TSV (or COCO JSON) plus the
  image files it lists. Uploaded images are matched to the label file's names by their path, or
  by their file name when the label file names folders the upload did not keep.
"""
from __future__ import annotations

import os
import shutil
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

from engine.datasets import IMAGE_EXTENSIONS, LabelledSet, read_labelled_set, require_images
from engine.errors import EngineError

LABEL_EXTENSIONS = (".csv", ".tsv", ".txt", ".json")


class UploadError(EngineError, ValueError):
    """An upload that cannot be used at all; the message says which file and why."""


@dataclass
class UploadLimits:
    """The most members and bytes (uncompressed) one zip may hold."""

    max_members: int = 5000
    max_bytes: int = 2 << 30


@dataclass
class Extracted:
    """What :func:`extract_zip` unpacked (``files``, relative paths inside ``root``) and refused
    (``(member name, reason)``)."""

    root: Path
    files: list[Path] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "a link (links are not unpacked)"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        return "a path that climbs out of the zip's folder (..)"
    return None


def extract_zip(path: str | Path, dest: str | Path, limits: UploadLimits | None = None) -> Extracted:
    """Unpack ``path`` into ``dest`` member by member (see the module doc)."""
    lim = limits or UploadLimits()
    path, dest = Path(path), Path(dest)
    name = Path(path).name
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadError(f"{name} is not a readable zip file ({exc}).") from exc
    out = Extracted(dest)
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > lim.max_members:
            raise UploadError(f"{name} holds {len(infos)} files; the limit is {lim.max_members}.")
        if sum(i.file_size for i in infos) > lim.max_bytes:
            raise UploadError(f"{name} unpacks to over {lim.max_bytes >> 20} MiB; the limit is that.")
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        for info in infos:
            problem = _member_problem(info)
            rel = PurePosixPath(info.filename.replace("\\", "/"))
            target = (root / Path(*rel.parts)).resolve() if not problem else None
            if target is not None and root not in target.parents:
                problem = "a path outside the zip's folder"
            if problem:
                out.refused.append((info.filename, f"refused: {problem}"))
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except (zipfile.BadZipFile, OSError, RuntimeError) as exc:  # damaged or encrypted member
                out.refused.append((info.filename, f"cannot be unpacked: {exc}"))
                continue
            out.files.append(Path(*rel.parts))
    return out


@dataclass
class ImageUploads:
    """Files to score (``files``) with the name to show for each (``names``: the file's name, or
    its path inside its zip as ``archive.zip/sub/cat.jpg``), and refusals ``(name, reason)``."""

    files: list[Path] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)


def _upload_path(p) -> Path:
    return Path(str(getattr(p, "name", p)))


def _is_zip(p: Path) -> bool:
    return p.suffix.lower() == ".zip" and zipfile.is_zipfile(p)


def expand_image_uploads(paths: Iterable, workdir: str | Path, limits: UploadLimits | None = None) -> ImageUploads:
    """Uploaded files -> files to score. A zip is unpacked under ``workdir`` and its images
    (by extension, sorted by path) are scored; any other file is scored as given (a file that is
    not an image is reported by the image loader, not here)."""
    out = ImageUploads()
    workdir = Path(workdir)
    for n, p in enumerate(paths or []):
        p = _upload_path(p)
        if not _is_zip(p):
            out.files.append(p)
            out.names.append(p.name)
            continue
        try:
            ex = extract_zip(p, workdir / f"zip{n}", limits)
        except UploadError as exc:
            out.refused.append((p.name, str(exc)))
            continue
        out.refused += [(f"{p.name}/{m}", reason) for m, reason in ex.refused]
        for rel in sorted(ex.files, key=lambda r: r.as_posix()):
            if rel.suffix.lower() in IMAGE_EXTENSIONS and not rel.name.startswith("._"):
                out.files.append(ex.root / rel)
                out.names.append(f"{p.name}/{rel.as_posix()}")
    return out


def _find_label_file(root: Path, files: Sequence[Path]) -> Path:
    """In an unpacked zip: the VOC folder, else the one COCO JSON or CSV/TSV."""
    for rel in files:
        parts = rel.parts
        if "Annotations" in parts[:-1]:
            return root.joinpath(*parts[:parts.index("Annotations")])
    labels = [rel for rel in files if rel.suffix.lower() in LABEL_EXTENSIONS
              and not rel.name.startswith(("._", "."))]
    if len(labels) != 1:
        found = ", ".join(r.as_posix() for r in labels) or "none"
        raise UploadError("The zip needs exactly one label file (a CSV/TSV of filename,labels or a "
                          f"COCO JSON) or a VOC folder with Annotations/; label files found: {found}.")
    return root / labels[0]


def labelled_set_from_uploads(paths: Sequence, workdir: str | Path, categories: Sequence[str] | None = None,
                              aliases: dict | None = None, limits: UploadLimits | None = None) -> LabelledSet:
    """A labelled set from uploads: one zip, or a label file plus its images (see the module doc).
    Raises :class:`UploadError` / :class:`engine.datasets.DatasetError` with a message that names
    the uploaded files it looked in."""
    ups = [_upload_path(p) for p in paths or []]
    if not ups:
        raise UploadError("Upload a zip of a labelled set, or a CSV/TSV of filename,labels with its images.")
    workdir = Path(workdir)
    zips = [p for p in ups if _is_zip(p)]
    if zips:
        if len(ups) != 1:
            raise UploadError("Upload either one zip, or a label file with its images - not both.")
        ex = extract_zip(zips[0], workdir / "set", limits)
        label = _find_label_file(ex.root, ex.files)
        data = read_labelled_set(label, categories=categories, aliases=aliases)
        return _match_by_name(data, {f.name: ex.root / f for f in ex.files}, f"the zip {zips[0].name}")
    labels = [p for p in ups if p.suffix.lower() in LABEL_EXTENSIONS]
    if len(labels) != 1:
        raise UploadError("Upload exactly one label file (CSV/TSV of filename,labels or a COCO JSON) "
                          f"with the images; got {len(labels)}.")
    folder = workdir / "images"
    folder.mkdir(parents=True, exist_ok=True)
    by_name: dict[str, Path] = {}
    for p in ups:
        if p is labels[0]:
            continue
        target = folder / p.name
        if not target.exists():
            try:
                os.link(p, target)
            except OSError:
                shutil.copyfile(p, target)
        by_name[p.name] = target
    label = workdir / labels[0].name
    shutil.copyfile(labels[0], label)
    data = read_labelled_set(label, image_dir=folder, categories=categories, aliases=aliases)
    return _match_by_name(data, by_name, f"the {len(by_name)} uploaded images")


def _match_by_name(data: LabelledSet, by_name: dict[str, Path], where: str) -> LabelledSet:
    """Images the label file names but that are not where it says are looked up by file name
    among the uploads; when none is found at all, say where we looked."""
    data.images = [p if p.exists() else by_name.get(p.name, p) for p in data.images]
    require_images(data, where)
    return data
