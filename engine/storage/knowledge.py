"""What the LLM's knowledge becomes: cached answers, attributes, sentences, the co-occurrence
graph (computed edges, the user's edge edits, cliques)."""
from __future__ import annotations

from typing import Iterable

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from engine.storage.database import UNSET, Database
from engine.storage.errors import NotFoundError, StorageError
from engine.storage.schema import Answer, Attribute, Clique, Edge, Sentence, now


class KnowledgeTables(Database):
    """Answers, attributes, sentences and graph rows of a project."""

    # -- knowledge answers -------------------------------------------------------------------------

    def answer_cache(self, project_id: int) -> "StoreAnswerCache":
        """A project-scoped ``engine.knowledge.AnswerCache`` writing into this database."""
        with self._session(write=False) as s:
            self._project(s, project_id)
        return StoreAnswerCache(self, project_id)

    def put_answer(self, project_id: int, key: str, question: str, raw: str, items: list,
                   meta: dict | None = None) -> None:
        """Insert or replace the answer under ``key`` (created kept, updated refreshed)."""
        meta = dict(meta or {})
        stamp = now()
        values = dict(project_id=project_id, key=key, question=question or "", raw=raw or "",
                      items=list(items or []), model=str(meta.get("model") or ""), settings=meta,
                      created=stamp, updated=stamp)
        stmt = sqlite_insert(Answer.__table__).values(**values)
        stmt = stmt.on_conflict_do_update(index_elements=["project_id", "key"],
                                          set_={k: stmt.excluded[k] for k in
                                                ("question", "raw", "items", "model", "settings", "updated")})
        try:
            with self._session() as s:
                s.execute(stmt)
        except IntegrityError as exc:
            raise NotFoundError(f"Project {project_id} does not exist (deleted?).") from exc

    def get_answer(self, project_id: int, key: str) -> Answer | None:
        with self._session(write=False) as s:
            return s.execute(select(Answer).where(Answer.project_id == project_id, Answer.key == key)).scalars().first()

    def list_answers(self, project_id: int) -> list[Answer]:
        """Every stored answer, in the order first asked."""
        with self._session(write=False) as s:
            return list(s.execute(select(Answer).where(Answer.project_id == project_id).order_by(Answer.id)).scalars())

    def delete_answers(self, project_id: int, keys: Iterable[str] | None = None) -> int:
        """Forget the answers under ``keys`` (all when None) so they are asked again; returns how many."""
        with self._session() as s:
            q = delete(Answer).where(Answer.project_id == project_id)
            if keys is not None:
                q = q.where(Answer.key.in_(list(keys)))
            return s.execute(q).rowcount


    # -- attributes --------------------------------------------------------------------------------

    def replace_attributes(self, project_id: int, rows: Iterable[dict], category: str | None = UNSET) -> None:
        """Make the project's attributes exactly ``rows`` (dicts: category (None = common), text,
        kept, edited); with ``category`` given, only that category's attributes are replaced
        (``None`` = the common ones)."""
        with self._session() as s:
            self._project(s, project_id)
            q = delete(Attribute).where(Attribute.project_id == project_id)
            if category is not UNSET:
                q = q.where(Attribute.category.is_(None) if category is None else Attribute.category == category)
            s.execute(q)
            s.add_all([Attribute(project_id=project_id, category=r.get("category"), text=str(r["text"]),
                                 kept=bool(r.get("kept", True)), edited=bool(r.get("edited", False)))
                       for r in rows])

    def list_attributes(self, project_id: int, category: str | None = UNSET) -> list[Attribute]:
        """Attributes of the project (of one category when given; ``None`` = the common ones)."""
        with self._session(write=False) as s:
            q = select(Attribute).where(Attribute.project_id == project_id)
            if category is not UNSET:
                q = q.where(Attribute.category.is_(None) if category is None else Attribute.category == category)
            return list(s.execute(q.order_by(Attribute.id)).scalars())

    def update_attribute(self, attribute_id: int, text: str | None = None, kept: bool | None = None) -> None:
        """Edit one attribute (marked as edited by the user)."""
        with self._session() as s:
            a = self._get(s, Attribute, attribute_id, "Attribute")
            if text is not None:
                a.text = text
            if kept is not None:
                a.kept = bool(kept)
            a.edited = True
            s.add(a)


    # -- sentences ---------------------------------------------------------------------------------

    def replace_sentences(self, project_id: int, rows: Iterable[dict]) -> None:
        """Make the project's sentences exactly ``rows`` (dicts: text, labels, source, category,
        enabled, edited, and optionally rejected (the gate's reason), evidence and cut)."""
        with self._session() as s:
            self._project(s, project_id)
            s.execute(delete(Sentence).where(Sentence.project_id == project_id))
            s.add_all([_sentence(project_id, r) for r in rows])

    def add_sentences(self, project_id: int, rows: Iterable[dict]) -> list[int]:
        """Append sentences (same dicts as :meth:`replace_sentences`); returns their ids."""
        with self._session() as s:
            self._project(s, project_id)
            objs = [_sentence(project_id, r) for r in rows]
            s.add_all(objs)
            s.flush()
            return [o.id for o in objs]

    def list_sentences(self, project_id: int, enabled_only: bool = False, category: str | None = None,
                       source: str | None = None, search: str | None = None, asked: str | None = None,
                       limit: int | None = None, offset: int = 0, by_user: bool = False) -> list[Sentence]:
        """Sentences in insertion order, filtered by: enabled, ``category`` (among the labels),
        ``source`` (question), ``search`` (case-insensitive substring), ``asked`` (the category the
        question was about), ``by_user`` (the person's own: edited, or added by hand, source "user")."""
        with self._session(write=False) as s:
            q = self._sentence_query(project_id, enabled_only, category, source, search, asked)
            if by_user:
                q = q.where((Sentence.edited.is_(True)) | (Sentence.source == "user"))
            q = q.order_by(Sentence.id).offset(offset)
            if limit is not None:
                q = q.limit(limit)
            return list(s.execute(q).scalars())

    def count_sentences(self, project_id: int, enabled_only: bool = False, category: str | None = None,
                        source: str | None = None, search: str | None = None) -> int:
        with self._session(write=False) as s:
            q = self._sentence_query(project_id, enabled_only, category, source, search, None)
            return s.execute(select(func.count()).select_from(q.subquery())).scalar()

    @staticmethod
    def _sentence_query(project_id, enabled_only, category, source, search, asked):
        q = select(Sentence).where(Sentence.project_id == project_id)
        if enabled_only:
            q = q.where(Sentence.enabled.is_(True))
        if category:
            q = q.where(text("EXISTS (SELECT 1 FROM json_each(sentence.labels) WHERE json_each.value = :cat)")
                        .bindparams(cat=category))
        if source:
            q = q.where(Sentence.source == source)
        if asked:
            q = q.where(Sentence.category == asked)
        if search:
            q = q.where(func.instr(func.casefold(Sentence.text), search.casefold()) > 0)
        return q

    def sentence_counts(self, project_id: int, enabled_only: bool = True) -> dict[str, int]:
        """Sentences labelled with each category ({name: n}, 0 for an uncovered category)."""
        counts = {c.name: 0 for c in self.list_categories(project_id)}
        sql = ("SELECT j.value, count(*) FROM sentence, json_each(sentence.labels) AS j "
               "WHERE sentence.project_id = :pid" + (" AND sentence.enabled = 1" if enabled_only else "") +
               " GROUP BY j.value")
        with self._session(write=False) as s:
            for name, n in s.execute(text(sql), {"pid": project_id}):
                if name in counts:
                    counts[name] = int(n)
        return counts

    def sentence_sources(self, project_id: int) -> list[str]:
        with self._session(write=False) as s:
            return sorted(r for r in s.execute(select(Sentence.source).distinct()
                                            .where(Sentence.project_id == project_id)).scalars() if r)

    def get_sentence(self, sentence_id: int) -> Sentence:
        with self._session(write=False) as s:
            return self._get(s, Sentence, sentence_id, "Sentence")

    def update_sentence(self, sentence_id: int, text: str | None = None, labels: Iterable[str] | None = None,
                        enabled: bool | None = None) -> None:
        """Edit a sentence; a changed text or labels marks it as edited by the user."""
        with self._session() as s:
            row = self._get(s, Sentence, sentence_id, "Sentence")
            if text is not None and text != row.text:
                row.text, row.edited = text, True
            if labels is not None and list(labels) != list(row.labels):
                row.labels, row.edited = list(labels), True
            if enabled is not None:
                row.enabled = bool(enabled)
                if row.enabled:
                    row.rejected = None  # enabling a sentence the gate rejected restores it
            s.add(row)

    def restore_sentences(self, sentence_ids: Iterable[int]) -> int:
        """Put sentences the quality gate rejected back into the training set (enabled, no reason)."""
        with self._session() as s:
            return s.execute(update(Sentence).where(Sentence.id.in_(list(sentence_ids)))
                             .values(enabled=True, rejected=None)).rowcount

    def rejection_counts(self, project_id: int) -> dict[str, int]:
        """{reason: number of sentences} of the gate's rejections still stored (not restored)."""
        with self._session(write=False) as s:
            q = (select(Sentence.rejected, func.count()).where(Sentence.project_id == project_id,
                                                               Sentence.rejected.is_not(None))
                 .group_by(Sentence.rejected))
            return {reason: n for reason, n in s.execute(q).all()}

    def set_sentences_enabled(self, sentence_ids: Iterable[int], enabled: bool) -> int:
        with self._session() as s:
            return s.execute(update(Sentence).where(Sentence.id.in_(list(sentence_ids)))
                             .values(enabled=bool(enabled))).rowcount

    def delete_sentence(self, sentence_id: int) -> None:
        with self._session() as s:
            s.delete(self._get(s, Sentence, sentence_id, "Sentence"))

    def delete_sentences(self, sentence_ids: Iterable[int]) -> int:
        with self._session() as s:
            return s.execute(delete(Sentence).where(Sentence.id.in_(list(sentence_ids)))).rowcount


    # -- graph -------------------------------------------------------------------------------------

    def set_graph(self, project_id: int, weights: dict, tau: int | None = None,
                  cliques: Iterable[Iterable[str]] = ()) -> None:
        """Replace the computed edges (``weights`` {(a, b): n}, every non-zero pair), the threshold
        and the cliques; the user's edge edits are untouched."""
        with self._session() as s:
            p = self._project(s, project_id)
            p.graph_tau = None if tau is None else int(tau)
            s.add(p)
            s.execute(delete(Edge).where(Edge.project_id == project_id, Edge.origin == "computed"))
            merged: dict[tuple[str, str], float] = {}
            for (a, b), w in dict(weights).items():
                if a != b and w:
                    key = tuple(sorted((str(a), str(b))))
                    merged[key] = merged.get(key, 0.0) + float(w)
            s.add_all([Edge(project_id=project_id, a=a, b=b, weight=w, origin="computed")
                       for (a, b), w in merged.items()])
            s.execute(delete(Clique).where(Clique.project_id == project_id))
            s.add_all([Clique(project_id=project_id, position=i, members=list(q)) for i, q in enumerate(cliques)])

    def get_graph(self, project_id: int) -> tuple[dict, int | None]:
        """``(weights {(a, b): w}, tau)`` as last stored by :meth:`set_graph`."""
        with self._session(write=False) as s:
            p = self._project(s, project_id)
            rows = s.execute(select(Edge).where(Edge.project_id == project_id, Edge.origin == "computed")
                          .order_by(Edge.id)).scalars()
            w = {(e.a, e.b): (int(e.weight) if float(e.weight).is_integer() else e.weight) for e in rows}
            return w, p.graph_tau

    def get_cliques(self, project_id: int) -> list[list[str]]:
        with self._session(write=False) as s:
            return [list(c.members) for c in s.execute(select(Clique).where(Clique.project_id == project_id)
                                                     .order_by(Clique.position, Clique.id)).scalars()]

    def set_edge_edit(self, project_id: int, a: str, b: str, action: str) -> None:
        """``action``: "add" (a user-added edge), "remove" (a user-removed one) or "reset" (forget
        the edit of this pair). Pairs are unordered."""
        if action not in ("add", "remove", "reset"):
            raise StorageError(f"Edge edit action must be add, remove or reset, not {action!r}.")
        if a == b:
            raise StorageError("An edge joins two different categories.")
        a, b = sorted((str(a), str(b)))
        with self._session() as s:
            self._project(s, project_id)
            s.execute(delete(Edge).where(Edge.project_id == project_id, Edge.a == a, Edge.b == b,
                                         Edge.origin != "computed"))
            if action != "reset":
                s.add(Edge(project_id=project_id, a=a, b=b, weight=0.0,
                           origin="user-added" if action == "add" else "user-removed"))

    def edge_edits(self, project_id: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """``(added, removed)`` pairs of the user's edge edits."""
        with self._session(write=False) as s:
            rows = list(s.execute(select(Edge).where(Edge.project_id == project_id, Edge.origin != "computed")
                               .order_by(Edge.id)).scalars())
        return ([(e.a, e.b) for e in rows if e.origin == "user-added"],
                [(e.a, e.b) for e in rows if e.origin == "user-removed"])

    def clear_edge_edits(self, project_id: int) -> None:
        with self._session() as s:
            s.execute(delete(Edge).where(Edge.project_id == project_id, Edge.origin != "computed"))



class StoreAnswerCache:
    """``engine.knowledge.AnswerCache`` over the store: one row per question key in a project.
    Each put is its own transaction, so a killed knowledge run keeps every answer put before."""

    def __init__(self, store: KnowledgeTables, project_id: int):
        self.store = store
        self.project_id = project_id

    def get(self, key: str) -> str | None:
        row = self.store.get_answer(self.project_id, key)
        return None if row is None else row.raw

    def put(self, key: str, question: str, raw: str, items: list, meta: dict) -> None:
        self.store.put_answer(self.project_id, key, question, raw, items, meta)



def _sentence(project_id: int, r: dict) -> Sentence:
    return Sentence(project_id=project_id, text=str(r["text"]), labels=list(r.get("labels") or []),
                    source=str(r.get("source") or ""), category=r.get("category"),
                    enabled=bool(r.get("enabled", True)), edited=bool(r.get("edited", False)),
                    rejected=r.get("rejected") or None, evidence=dict(r.get("evidence") or {}),
                    cut=str(r.get("cut") or ""))
