"""Training runs (status, config, per-step losses), classifier files and evaluations."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from engine.storage.database import Database, check_status, strict_json
from engine.storage.errors import NotFoundError
from engine.storage.schema import ClassifierFile, Evaluation, Run, RunStep, now


class RunTables(Database):
    """Runs and their steps, classifier files, evaluations."""

    # -- training runs -----------------------------------------------------------------------------

    def create_run(self, project_id: int, config: dict, status: str = "running", lease: dict | None = None) -> int:
        check_status(status)
        with self._session() as s:
            self._project(s, project_id)
            r = Run(project_id=project_id, config=dict(config or {}), status=status, lease=lease)
            s.add(r)
            s.flush()
            return r.id

    def take_over_run(self, run_id: int, lease: dict, may_take) -> bool:
        """Give the run to the process of ``lease`` (status running) when ``may_take(run)`` says so,
        read and written in one write transaction (two processes cannot both take it over)."""
        with self._session() as s:
            r = self._get(s, Run, run_id, "Run")
            if not may_take(r):
                return False
            r.status, r.lease, r.finished = "running", dict(lease), None
            s.add(r)
            return True

    def renew_run_lease(self, run_id: int, lease: dict) -> None:
        """Refresh the lease (heartbeat) of a run this process trains."""
        with self._session() as s:
            r = self._get(s, Run, run_id, "Run")
            r.lease = dict(lease)
            s.add(r)

    def set_run_status(self, run_id: int, status: str) -> None:
        check_status(status)
        with self._session() as s:
            r = self._get(s, Run, run_id, "Run")
            r.status = status
            s.add(r)

    def add_run_step(self, run_id: int, step: dict) -> None:
        self.add_run_steps(run_id, [step])

    def add_run_steps(self, run_id: int, steps: Iterable[dict]) -> None:
        """Append per-step records (dicts with "step" and the losses, lr, epoch ...), one transaction."""
        rows = [dict(run_id=run_id, step=int(st.get("step", 0)),
                     data={k: v for k, v in st.items() if k != "step"}) for st in steps]
        if not rows:
            return
        try:
            with self._session() as s:
                s.execute(RunStep.__table__.insert(), rows)
        except IntegrityError as exc:
            raise NotFoundError(f"Run {run_id} does not exist (deleted?).") from exc

    def delete_run_steps(self, run_id: int, after_step: int = -1) -> int:
        """Drop the run's step records with ``step > after_step`` (all by default), e.g. the steps
        a resumed run will redo after its last checkpoint; returns how many."""
        with self._session() as s:
            return s.execute(delete(RunStep).where(RunStep.run_id == run_id, RunStep.step > after_step)).rowcount

    def run_steps(self, run_id: int) -> list[dict]:
        """The run's step records in order: ``{"step": n, **data}``."""
        with self._session(write=False) as s:
            return [{"step": r.step, **(r.data or {})} for r in
                    s.execute(select(RunStep).where(RunStep.run_id == run_id).order_by(RunStep.id)).scalars()]

    def run_step_summaries(self, project_id: int) -> dict[int, tuple[int, dict]]:
        """``{run id: (number of step records, the last record as run_steps gives it)}`` for the
        project's runs that have steps."""
        with self._session(write=False) as s:
            agg = (select(RunStep.run_id, func.count().label("n"), func.max(RunStep.id).label("last"))
                   .join(Run, Run.id == RunStep.run_id).where(Run.project_id == project_id)
                   .group_by(RunStep.run_id).subquery())
            rows = s.execute(select(agg.c.run_id, agg.c.n, RunStep).join(RunStep, RunStep.id == agg.c.last))
            return {rid: (int(n), {"step": st.step, **(st.data or {})}) for rid, n, st in rows}

    def finish_run(self, run_id: int, status: str, elapsed_s: float | None = None) -> None:
        """End a run: done / cancelled / failed, with its duration."""
        check_status(status)
        with self._session() as s:
            r = self._get(s, Run, run_id, "Run")
            r.status, r.finished = status, now()
            if elapsed_s is not None:
                r.elapsed_s = float(elapsed_s)
            s.add(r)

    def list_runs(self, project_id: int) -> list[Run]:
        with self._session(write=False) as s:
            return list(s.execute(select(Run).where(Run.project_id == project_id).order_by(Run.id)).scalars())

    def get_run(self, run_id: int) -> Run:
        with self._session(write=False) as s:
            return self._get(s, Run, run_id, "Run")

    def fail_unfinished_runs(self, project_id: int | None = None) -> int:
        """Mark queued/running runs as failed (after a restart nothing runs them); returns how many.
        Call it only when no other process can be training on this database."""
        with self._session() as s:
            q = update(Run).where(Run.status.in_(("queued", "running")))
            if project_id is not None:
                q = q.where(Run.project_id == project_id)
            return s.execute(q.values(status="failed", finished=now())).rowcount

    def delete_run(self, run_id: int) -> None:
        with self._session() as s:
            s.delete(self._get(s, Run, run_id, "Run"))


    # -- classifiers and evaluations ---------------------------------------------------------------

    def add_classifier(self, project_id: int, run_id: int | None, path: str | Path, sha256: str) -> int:
        with self._session() as s:
            self._project(s, project_id)
            c = ClassifierFile(project_id=project_id, run_id=run_id, path=str(path), sha256=str(sha256))
            s.add(c)
            s.flush()
            return c.id

    def list_classifiers(self, project_id: int) -> list[ClassifierFile]:
        """The project's classifier files, oldest first (the last is the newest)."""
        with self._session(write=False) as s:
            return list(s.execute(select(ClassifierFile).where(ClassifierFile.project_id == project_id)
                               .order_by(ClassifierFile.id)).scalars())

    def get_classifier(self, classifier_id: int) -> ClassifierFile:
        with self._session(write=False) as s:
            return self._get(s, ClassifierFile, classifier_id, "Classifier")

    def delete_classifier(self, classifier_id: int, remove_file: bool = False) -> None:
        with self._session() as s:
            c = self._get(s, ClassifierFile, classifier_id, "Classifier")
            path = Path(c.path)
            s.delete(c)
        if remove_file and path.is_file():
            path.unlink()

    def add_evaluation(self, project_id: int, dataset: str, metrics: dict, per_category_ap: dict | None = None,
                       classifier_id: int | None = None) -> int:
        """Store an evaluation. ``per_category_ap`` defaults to what ``metrics`` holds:
        ``metrics["per_category_ap"]``, or ``{name: results[name]["per_category_ap"]}`` for a
        workflow result comparing several classifiers."""
        if per_category_ap is None:
            per_category_ap = metrics.get("per_category_ap")
            if per_category_ap is None and isinstance(metrics.get("results"), dict):
                per_category_ap = {k: v.get("per_category_ap", {}) for k, v in metrics["results"].items()
                                   if isinstance(v, dict)}
        with self._session() as s:
            self._project(s, project_id)
            e = Evaluation(project_id=project_id, classifier_id=classifier_id, dataset=str(dataset),
                           metrics=strict_json(metrics), per_category_ap=strict_json(per_category_ap or {}))
            s.add(e)
            s.flush()
            return e.id

    def list_evaluations(self, project_id: int) -> list[Evaluation]:
        with self._session(write=False) as s:
            return list(s.execute(select(Evaluation).where(Evaluation.project_id == project_id)
                               .order_by(Evaluation.id)).scalars())

    def get_evaluation(self, evaluation_id: int) -> Evaluation:
        with self._session(write=False) as s:
            return self._get(s, Evaluation, evaluation_id, "Evaluation")
