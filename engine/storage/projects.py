"""Project and category rows."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from engine.storage.database import UNSET, Database, clean_name, duplicate_names
from engine.storage.errors import NameClashError
from engine.storage.schema import IMPORTING, Attribute, Category, Project


class ProjectTables(Database):
    """Projects (name, settings, files folder) and their ordered categories."""

    # -- projects ----------------------------------------------------------------------------------

    def create_project(self, name: str, settings: dict | None = None,
                       categories: Iterable[str | dict] | None = None) -> int:
        """A new project, with its ``categories`` (names, or dicts as :meth:`set_categories`
        takes) in the same transaction; raises :class:`NameClashError` when the name is taken or
        two categories share a name (then nothing is written)."""
        name = clean_name(name, "project")
        rows = [r if isinstance(r, dict) else {"name": r} for r in (categories or [])]
        names = [clean_name(r.get("name"), "category") for r in rows]
        dup = duplicate_names(names)
        if dup:
            raise NameClashError(f"Duplicate category names: {', '.join(dup)}.")
        try:
            with self._session() as s:
                p = Project(name=name, settings=dict(settings or {}))
                s.add(p)
                s.flush()
                s.add_all([Category(project_id=p.id, position=i, name=n, synonyms=list(r.get("synonyms") or []),
                                    super_category=r.get("super_category") or None, prompt=r.get("prompt") or None)
                           for i, (n, r) in enumerate(zip(names, rows))])
                return p.id
        except IntegrityError as exc:
            raise NameClashError(f"A project named {name!r} already exists; choose another name.") from exc

    def list_projects(self, include_importing: bool = False) -> list[Project]:
        """Every project, oldest first (not those an import is still writing)."""
        with self._session(write=False) as s:
            rows = list(s.execute(select(Project).order_by(Project.id)).scalars())
        return [p for p in rows if include_importing or IMPORTING not in (p.settings or {})]

    def category_counts(self) -> dict[int, int]:
        """``{project id: number of categories}`` of every project that has categories."""
        with self._session(write=False) as s:
            return {pid: int(n) for pid, n in s.execute(
                select(Category.project_id, func.count()).group_by(Category.project_id))}

    def get_project(self, project_id: int) -> Project:
        with self._session(write=False) as s:
            return self._project(s, project_id)

    def find_project(self, name: str) -> Project | None:
        with self._session(write=False) as s:
            return s.execute(select(Project).where(Project.name == name)).scalars().first()

    def rename_project(self, project_id: int, name: str) -> None:
        name = clean_name(name, "project")
        try:
            with self._session() as s:
                p = self._project(s, project_id)
                p.name = name
                s.add(p)
        except IntegrityError as exc:
            raise NameClashError(f"A project named {name!r} already exists; choose another name.") from exc

    def set_project_settings(self, project_id: int, settings: dict, merge: bool = True) -> dict:
        """Store the project's settings (merged into the stored ones unless ``merge=False``)."""
        with self._session() as s:
            p = self._project(s, project_id)
            p.settings = {**(p.settings or {}), **settings} if merge else dict(settings)
            s.add(p)
            return dict(p.settings)

    def delete_project(self, project_id: int, remove_files: bool = True) -> None:
        """Delete the project and every row of it; then its files folder (when ``remove_files``)."""
        with self._session() as s:
            s.delete(self._project(s, project_id))
        if remove_files:
            folder = self.project_folder(project_id, create=False)
            if folder.is_dir() and folder.resolve().parent == self.files_root.resolve():
                shutil.rmtree(folder, ignore_errors=True)

    def project_folder(self, project_id: int, create: bool = True) -> Path:
        """``<files_dir>/<project id>``: the project's files (classifiers, checkpoints)."""
        d = self.files_root / str(int(project_id))
        if create:
            d.mkdir(parents=True, exist_ok=True)
        return d


    # -- categories --------------------------------------------------------------------------------

    def add_category(self, project_id: int, name: str, super_category: str | None = None,
                     prompt: str | None = None, synonyms: Iterable[str] = ()) -> int:
        """Append a category (last position); raises :class:`NameClashError` on a duplicate name."""
        name = clean_name(name, "category")
        try:
            with self._session() as s:
                self._project(s, project_id)
                have = list(s.execute(select(Category.name).where(Category.project_id == project_id)).scalars())
                if duplicate_names(have + [name]):
                    raise NameClashError(f"The project already has a category {name!r} (case does not count).")
                pos = s.execute(select(func.coalesce(func.max(Category.position) + 1, 0))
                             .where(Category.project_id == project_id)).scalar()
                c = Category(project_id=project_id, position=pos, name=name, synonyms=list(synonyms),
                             super_category=super_category or None, prompt=prompt or None)
                s.add(c)
                s.flush()
                return c.id
        except IntegrityError as exc:
            raise NameClashError(f"The project already has a category {name!r}.") from exc

    def set_categories(self, project_id: int, rows: Iterable[dict]) -> list[int]:
        """Make the project's categories exactly ``rows`` (dicts: name, super_category, prompt,
        synonyms), in that order. A category whose name stays keeps its id; the attributes of a
        category that goes are deleted with it."""
        rows = [dict(r) for r in rows]
        names = [clean_name(r["name"], "category") for r in rows]
        dup = duplicate_names(names)
        if dup:
            raise NameClashError(f"Duplicate category names: {', '.join(dup)}.")
        with self._session() as s:
            self._project(s, project_id)
            old = {c.name: c for c in s.execute(select(Category).where(Category.project_id == project_id)).scalars()}
            gone = [n for n in old if n not in names]
            for n in gone:
                s.delete(old[n])
            if gone:
                s.execute(delete(Attribute).where(Attribute.project_id == project_id, Attribute.category.in_(gone)))
            s.flush()
            ids = []
            for pos, (name, r) in enumerate(zip(names, rows)):
                c = old.get(name) or Category(project_id=project_id, name=name)
                c.position = pos
                c.super_category = r.get("super_category") or None
                c.prompt = r.get("prompt") or None
                c.synonyms = list(r.get("synonyms") or [])
                s.add(c)
                s.flush()
                ids.append(c.id)
            return ids

    def list_categories(self, project_id: int) -> list[Category]:
        """The project's categories in their order."""
        with self._session(write=False) as s:
            return list(s.execute(select(Category).where(Category.project_id == project_id)
                               .order_by(Category.position, Category.id)).scalars())

    def find_category(self, project_id: int, name: str) -> Category | None:
        """The project's category called ``name`` (exact), or None."""
        with self._session(write=False) as s:
            return s.execute(select(Category).where(Category.project_id == project_id,
                                                    Category.name == name)).scalars().first()

    def get_category(self, category_id: int) -> Category:
        with self._session(write=False) as s:
            return self._get(s, Category, category_id, "Category")

    def update_category(self, category_id: int, super_category=UNSET, synonyms=UNSET, prompt=UNSET,
                        position=UNSET) -> None:
        """Change the given fields (an argument left out keeps its value; ``None`` clears it)."""
        with self._session() as s:
            c = self._get(s, Category, category_id, "Category")
            if super_category is not UNSET:
                c.super_category = super_category or None
            if synonyms is not UNSET:
                c.synonyms = list(synonyms or [])
            if prompt is not UNSET:
                c.prompt = prompt or None
            if position is not UNSET:
                c.position = int(position)
            s.add(c)

    def delete_category(self, category_id: int) -> None:
        """Delete a category and its attributes (sentences keep their text; labels are untouched)."""
        with self._session() as s:
            c = self._get(s, Category, category_id, "Category")
            s.execute(delete(Attribute).where(Attribute.project_id == c.project_id, Attribute.category == c.name))
            s.delete(c)
