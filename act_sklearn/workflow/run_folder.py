"""One labelling job's state on disk: the run-folder format, its resume rules and its lock.

Layout of a run folder::

    manifest.json      settings (input, columns, classes) and every finished step with
                       its configuration, the fingerprints of the files it read, and counts
    items.jsonl        item_id, text, image (an absolute path) per item
    oracle.csv         item_id, gold                              (simulations only)
    machine.csv        item_id, machine_label, proba:<class>...   (annotate; an empty label
                       and NaN probabilities where the LLM gave no usable answer)
    criticism.csv      item_id, error_proba                       (criticize; 1 where it failed)
    failures.csv       item_id, stage, reason                     (items with no usable answer:
                       with --on-error skip they are reviewed first)
    selection.csv      item_id, inclusion_proba, selected, round, (select; in rounds, select --round
                       round_inclusion_proba                      adds each round: see below)
    reviews.csv        item_id, human_label, source               (import; only grows)
    model.joblib       the downstream model                       (train)
    report.json/.md    the report, with its plots as PNG          (report)
    cache.sqlite       the LLM response cache: a step run again pays for nothing twice
    .lock              held (an OS file lock) by the process writing to the folder

Each file is replaced whole (write to a temporary file, then rename), so a run
killed at any moment leaves every file either as it was or complete. The lock
dies with its process, so a killed run leaves a folder the next command can use.

Resume rules
------------
A step is *current* when it finished, every step it needs is current and has not
run again since, and the files it read are unchanged (their sha256 is in the
manifest, so an edited file counts too). ``annotate`` and ``criticize`` are
skipped when current with the same configuration (the component's every
parameter that can change an answer); otherwise they run again, paying only for
the requests the response cache lacks, and every later step becomes stale: it
must run again before anything uses it.

==========  ===============================  ==============  ==========================
step        needs (must be current)          reads           writes
==========  ===============================  ==============  ==========================
annotate    --                               items.jsonl     machine.csv
criticize   annotate                         machine.csv     criticism.csv
select      criticize                        criticism.csv,  selection.csv
                                             failures.csv
import      select                           selection.csv   reviews.csv
train       select                           machine.csv,    model.joblib
                                             selection.csv,
                                             reviews.csv
report      select                           (all)           report.json, report.md
evaluate    train                            model.joblib    (held-out accuracies, demo)
==========  ===============================  ==============  ==========================

Answers fix the design they were drawn under: once ``reviews.csv`` holds answers,
``select`` refuses to write a different selection (see :func:`~.steps.select`).

Review in rounds: ``select --rounds R`` draws the first round; once every item
selected so far has an answer, ``select --round`` draws the next among the
items without one (:func:`~.steps.select_next_round`). ``round`` is the round
that drew each item (0: none) and ``round_inclusion_proba`` its probability in
that round (for the others, the latest round's). ``inclusion_proba``, what the
estimates and ``train`` weight by, is 1 for the items of earlier rounds and the
latest round's probability for every other item: given the earlier answers,
their items are known, and the latest round is a one-round design over the
rest (:class:`~act_sklearn.ACTSampler`).
"""

import csv
import fcntl
import hashlib
import io
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .._atomic import write_atomically

MANIFEST = "manifest.json"
ITEMS = "items.jsonl"
ORACLE = "oracle.csv"
MACHINE = "machine.csv"
CRITICISM = "criticism.csv"
FAILURES = "failures.csv"
SELECTION = "selection.csv"
REVIEWS = "reviews.csv"
ORACLE_REVIEW = "oracle_review.csv"
MODEL = "model.joblib"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
CACHE = "cache.sqlite"
LOCK = ".lock"

STEP_NEEDS = {
    "annotate": (),
    "criticize": ("annotate",),
    "select": ("criticize",),
    "import": ("select",),
    "train": ("select",),
    "report": ("select",),
    "evaluate": ("train",),
}
STEP_READS = {
    "annotate": (ITEMS,),
    "criticize": (MACHINE,),
    "select": (CRITICISM, FAILURES),
    "import": (SELECTION,),
    "train": (MACHINE, SELECTION, REVIEWS),
    "report": (),
    "evaluate": (MODEL,),
}


class RunFolderError(ValueError):
    """A run folder that is missing, incomplete for the step asked, or made for other settings."""


class RunFolderBusy(RunFolderError):
    """Another process holds the run folder's lock."""


class RunFolder:
    """Read and write the files of one run folder (see the module docstring).

    Parameters
    ----------
    path : str or Path
        The folder.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._lock_depth = 0
        self._items = None  # items.jsonl never changes once written: read it once

    # -- the lock ----------------------------------------------------------------

    @contextmanager
    def locked(self, *, wait=False, on_wait=None):
        """Hold the folder's exclusive lock (re-entrant within this object).

        Parameters
        ----------
        wait : bool, default=False
            Wait for the holder to finish instead of raising :class:`RunFolderBusy`.
        on_wait : callable or None
            Called with the holder's description before waiting.
        """
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield self
            finally:
                self._lock_depth -= 1
            return
        self.path.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder(descriptor)
                if not wait:
                    raise RunFolderBusy(
                        f"{self.path} is busy: {holder} is writing to it. Wait for it to finish, or pass "
                        "--wait to start when it has."
                    ) from None
                if on_wait is not None:
                    on_wait(holder)
                fcntl.flock(descriptor, fcntl.LOCK_EX)
            os.ftruncate(descriptor, 0)
            holder = dict(pid=os.getpid(), command=" ".join(sys.argv), since=_now())
            os.pwrite(descriptor, json.dumps(holder).encode(), 0)
            self._lock_depth = 1
            try:
                yield self
            finally:
                self._lock_depth = 0
                os.ftruncate(descriptor, 0)
        finally:
            os.close(descriptor)  # closing releases the lock; so does the process dying

    @staticmethod
    def _holder(descriptor):
        try:
            holder = json.loads(os.pread(descriptor, 4096, 0) or b"{}")
        except ValueError:
            holder = {}
        if not holder:
            return "another process"
        return f"process {holder['pid']} (`{holder['command']}`, since {holder['since']})"

    # -- creation and the manifest ---------------------------------------------------

    @classmethod
    def create(cls, path, items, *, classes, settings):
        """Start a run folder for ``items`` (dicts from :func:`~.items.read_items`); see :meth:`start`."""
        return cls(path).start(items, classes=classes, settings=settings)

    def start(self, items, *, classes, settings):
        """Write the items and the manifest, under the lock.

        An existing run folder is reused only if it was made for the same items and
        classes, so that a repeated command resumes instead of starting over.
        """
        classes = [str(c) for c in classes]
        ids = [item["item_id"] for item in items]
        content = [{key: item[key] for key in ("item_id", "text", "image")} for item in items]
        with self.locked():
            if (self.path / MANIFEST).exists():
                if self.manifest()["classes"] != classes or self.items() != content:
                    raise RunFolderError(
                        f"{self.path} holds another job (other items, texts, images or classes). Choose a new "
                        "--run folder, or delete this one to start over."
                    )
                return self
            self._write_lines(ITEMS, (json.dumps(row, ensure_ascii=False) for row in content))
            self._items = None
            if any(item.get("gold") not in (None, "") for item in items):
                self.write_table(ORACLE, {"item_id": ids, "gold": [item.get("gold") for item in items]})
            self.write_manifest(dict(version=2, created=_now(), classes=classes, settings=settings, steps={}))
        return self

    def manifest(self):
        path = self.path / MANIFEST
        if not path.exists():
            raise RunFolderError(
                f"{self.path} is not a run folder (no {MANIFEST}). Start one with `act-sklearn annotate`."
            )
        return json.loads(path.read_text(encoding="utf-8"))

    def write_manifest(self, manifest):
        write_atomically(self.path / MANIFEST, lambda f: json.dump(manifest, f, indent=2, ensure_ascii=False))

    def steps(self):
        return self.manifest()["steps"]

    # -- the resume rules --------------------------------------------------------------

    def finish_step(self, step, *, config=None, **details):
        """Record that ``step`` finished: its configuration, what it read, and what it produced."""
        manifest = self.manifest()
        steps = manifest["steps"]
        manifest["serial"] = serial = manifest.get("serial", 0) + 1
        upstream = {needed: steps[needed]["serial"] for needed in STEP_NEEDS[step] if needed in steps}
        inputs = {name: self.fingerprint(name) for name in STEP_READS[step]}
        steps[step] = dict(
            finished=_now(), serial=serial, config=config, upstream=upstream, inputs=inputs, **details
        )
        self.write_manifest(manifest)

    def fingerprint(self, name):
        """sha256 of a file of the folder (None if absent): what a step's result depends on."""
        path = self.path / name
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None

    def stale_reason(self, step, steps=None):
        """Why ``step`` is not current, or None if it is."""
        found = self._first_to_run(step, self.steps() if steps is None else steps)
        return None if found is None else found[1]

    def _first_to_run(self, step, steps):
        """``(the step to run first, why)`` for a ``step`` that is not current, else None."""
        for needed in STEP_NEEDS[step]:
            found = self._first_to_run(needed, steps)
            if found is not None:
                return found
        if step not in steps:
            return step, f"`act-sklearn {step}` has not run"
        for needed in STEP_NEEDS[step]:
            if steps[step].get("upstream", {}).get(needed) != steps[needed].get("serial"):
                return step, f"`act-sklearn {needed}` ran again after `act-sklearn {step}`"
        for name, digest in (steps[step].get("inputs") or {}).items():
            if self.fingerprint(name) != digest:
                return step, f"{name} changed since `act-sklearn {step}` ran"
        return None

    def is_current(self, step, config=None):
        """Whether ``step`` is current and, if ``config`` is given, finished with that configuration."""
        steps = self.steps()
        if self._first_to_run(step, steps) is not None:
            return False
        return config is None or steps[step].get("config") == config

    def require(self, *steps):
        """Raise a clear error, naming the step to run, unless every one of ``steps`` is current."""
        recorded = self.steps()
        for step in steps:
            found = self._first_to_run(step, recorded)
            if found is not None:
                raise RunFolderError(f"{self.path}: {found[1]}; run `act-sklearn {found[0]}` first.")

    # -- items -------------------------------------------------------------------------

    def items(self):
        """The items as dicts with ``item_id``, ``text`` and ``image`` (a path or None); do not modify them."""
        if self._items is None:
            if not (self.path / ITEMS).exists():
                self.manifest()  # the clearer error when the folder is not a run folder
                raise RunFolderError(f"{self.path} has no {ITEMS}; start again with `act-sklearn annotate`.")
            with open(self.path / ITEMS, encoding="utf-8") as file:
                self._items = [json.loads(line) for line in file if line.strip()]
        return list(self._items)

    def item_ids(self):
        return [item["item_id"] for item in self.items()]

    def classes(self):
        return self.manifest()["classes"]

    def contents(self):
        """What the LLMs read, one :class:`~act_sklearn.llm.content.Item` per item."""
        from ..llm.content import Item

        contents = []
        for item in self.items():
            text = None if item["text"] is None else str(item["text"])
            contents.append(Item(text=None if text == "" and item["image"] else text, image=item["image"]))
        return contents

    # -- typed tables ------------------------------------------------------------------

    def machine_labels(self):
        """The annotator's labels (strings), one per item; ``""`` where it gave no usable answer."""
        labels = np.array(self._column(MACHINE, "machine_label", "annotate"), dtype=object)
        unknown = sorted(set(labels) - set(self.classes()) - {""})
        if unknown:
            raise RunFolderError(f"{self.path / MACHINE} holds labels outside the classes: {unknown[:5]}.")
        return labels

    def write_machine_labels(self, labels, proba, classes):
        table = {"item_id": self.item_ids(), "machine_label": [str(label) for label in labels]}
        for k, name in enumerate(classes):
            table[f"proba:{name}"] = [repr(float(p)) for p in proba[:, k]]
        self.write_table(MACHINE, table)

    def error_proba(self):
        """The criticizer's probability that each machine label is wrong."""
        return self._probabilities(CRITICISM, "error_proba", "criticize")

    def write_error_proba(self, error_proba):
        self.write_table(CRITICISM, {"item_id": self.item_ids(), "error_proba": [repr(float(e)) for e in error_proba]})

    def selection(self):
        """``(inclusion_proba, selected)``: each item's probability of review, and whether it was drawn."""
        inclusion_proba = self._probabilities(SELECTION, "inclusion_proba", "select")
        selected = self._column(SELECTION, "selected", "select")
        if set(selected) - {"0", "1"}:
            raise RunFolderError(f"{self.path / SELECTION}: 'selected' must hold 0 or 1; run `act-sklearn select`.")
        return inclusion_proba, np.array(selected) == "1"

    def write_selection(self, inclusion_proba, selected, *, rounds=None, round_inclusion_proba=None):
        """Write ``selection.csv``; one round unless ``rounds`` (the round of each item, 0 for none) is given."""
        rounds = np.asarray(selected, dtype=int) if rounds is None else rounds
        round_inclusion_proba = inclusion_proba if round_inclusion_proba is None else round_inclusion_proba
        table = {
            "item_id": self.item_ids(),
            "inclusion_proba": [repr(float(p)) for p in inclusion_proba],
            "selected": [str(int(s)) for s in selected],
            "round": [str(int(r)) for r in rounds],
            "round_inclusion_proba": [repr(float(p)) for p in round_inclusion_proba],
        }
        self.write_table(SELECTION, table)

    def interval_draw(self):
        """The randomized interval's draw: the selection's hash, a 32-bit seed.

        Fixed before any answer is in and the same on every report and train, so
        the draw cannot be made again once the reviews are seen; across jobs it is
        as good as uniform.
        """
        return int(self.fingerprint(SELECTION)[:8], 16)

    def selection_rounds(self):
        """``(round, round_inclusion_proba)``: the round that drew each item (0: none), and its ``pi`` there.

        A selection written before rounds existed is one round.
        """
        inclusion_proba, selected = self.selection()
        if "round" not in self.read_table(SELECTION):
            return selected.astype(int), inclusion_proba
        try:
            rounds = np.array(self._column(SELECTION, "round", "select"), dtype=int)
        except ValueError:
            raise RunFolderError(f"{self.path / SELECTION}: 'round' holds a non-integer; run `act-sklearn select`.") from None
        round_proba = self._probabilities(SELECTION, "round_inclusion_proba", "select")
        if not np.array_equal(rounds > 0, selected) or rounds.min() < 0:
            raise RunFolderError(
                f"{self.path / SELECTION}: 'round' must be 0 exactly where 'selected' is 0; run `act-sklearn select`."
            )
        return rounds, round_proba

    def selected_ids(self):
        _, selected = self.selection()
        return [item for item, chosen in zip(self.item_ids(), selected) if chosen]

    def failures(self):
        """Items without a usable LLM answer: item_id -> (stage, reason)."""
        table = self.read_table(FAILURES)
        return {i: (s, r) for i, s, r in zip(table.get("item_id", []), table.get("stage", []), table.get("reason", []))}

    def write_failures(self, stage, failures):
        """Replace the failures of ``stage`` with ``failures`` (item_id -> reason)."""
        kept = [(i, s, r) for i, (s, r) in self.failures().items() if s != stage]
        rows = kept + [(i, stage, reason) for i, reason in failures.items()]
        if not rows and not (self.path / FAILURES).exists():
            return  # a job without failures has no failures file
        self.write_table(FAILURES, {"item_id": [r[0] for r in rows], "stage": [r[1] for r in rows],
                                    "reason": [r[2] for r in rows]})

    def gold(self):
        """The gold labels of a simulation (strings), or None."""
        gold = self.read_table(ORACLE).get("gold")
        return None if not gold else np.array(gold, dtype=object)

    def reviews(self):
        """Human labels taken so far: item_id -> label (as text)."""
        table = self.read_table(REVIEWS)
        return dict(zip(table.get("item_id", []), table.get("human_label", [])))

    def add_reviews(self, taken, source):
        """Append newly taken answers; earlier answers are kept as they are."""
        table = self.read_table(REVIEWS) or {"item_id": [], "human_label": [], "source": []}
        known = set(table["item_id"])
        for item_id, label in taken.items():
            if item_id not in known:
                table["item_id"].append(item_id)
                table["human_label"].append(str(label))
                table["source"].append(str(source))
        self.write_table(REVIEWS, table)

    # -- CSV ---------------------------------------------------------------------------

    def write_table(self, name, columns):
        """Write ``columns`` (name -> sequence, all of one length) as ``name`` (CSV), atomically."""
        names = list(columns)
        rows = zip(*(columns[n] for n in names))

        def write(file):
            writer = csv.writer(file)
            writer.writerow(names)
            writer.writerows(rows)

        write_atomically(self.path / name, write)

    def read_table(self, name):
        """A CSV table as name -> list of strings (empty dict if absent)."""
        path = self.path / name
        if not path.exists():
            return {}
        reader = csv.reader(io.StringIO(path.read_text(encoding="utf-8")))
        header = next(reader, [])
        columns = {n: [] for n in header}
        for row in reader:
            for n, value in zip(header, row):
                columns[n].append(value)
        return columns

    def _column(self, name, column, step):
        """One column of a per-item table, checked to cover exactly the items, in order."""
        table = self.read_table(name)
        if column not in table or table.get("item_id") != self.item_ids():
            raise RunFolderError(
                f"{self.path / name} is missing or does not cover the items; run `act-sklearn {step}` again."
            )
        return table[column]

    def _probabilities(self, name, column, step):
        text = self._column(name, column, step)
        try:
            values = np.array(text, dtype=float)
        except ValueError:
            raise RunFolderError(f"{self.path / name}: {column} holds a non-number; run `act-sklearn {step}` again.") from None
        if not np.all((values >= 0) & (values <= 1)):
            raise RunFolderError(f"{self.path / name}: {column} must lie in [0, 1]; run `act-sklearn {step}` again.")
        return values

    def _write_lines(self, name, lines):
        write_atomically(self.path / name, lambda f: f.writelines(line + "\n" for line in lines))


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
