"""One labelling job's state on disk, written atomically, from which every step resumes.

Layout of a run folder::

    manifest.json      settings (input, columns, classes, models, prompts, budget, rule,
                       seeds) and the steps finished, with their times
    items.jsonl        item_id, text, image (a path) per item; gold labels, for
                       simulations only, in oracle.csv
    machine.csv        item_id, machine_label, proba:<class>...   (annotate)
    criticism.csv      item_id, error_proba                       (criticize)
    selection.csv      item_id, inclusion_proba, selected         (select)
    reviews.csv        item_id, human_label, source               (import; only grows)
    cache.sqlite       the LLM response cache: a step run again pays for nothing twice

Each file is replaced whole (write to a temporary file, then rename), so a run
killed at any moment leaves every file either as it was or complete.
"""

import csv
import io
import json
import time
from pathlib import Path

from .review.files import write_atomically

MANIFEST = "manifest.json"


class RunFolderError(ValueError):
    """A run folder that is missing, incomplete for the step asked, or made for other settings."""


class RunFolder:
    """Read and write the files of one run folder (see the module docstring)."""

    def __init__(self, path):
        self.path = Path(path)

    # -- creation and the manifest ---------------------------------------------------

    @classmethod
    def create(cls, path, items, *, classes, settings):
        """Start a run folder for ``items`` (dicts from :func:`act_sklearn.review.items.read_items`).

        An existing run folder is reused only if it was made for the same items and
        classes, so that a repeated command resumes instead of starting over.
        """
        run = cls(path)
        classes = [str(c) for c in classes]
        ids = [item["item_id"] for item in items]
        if (run.path / MANIFEST).exists():
            manifest = run.manifest()
            if manifest["classes"] != classes or run.item_ids() != ids:
                raise RunFolderError(
                    f"{run.path} holds another job (other items or classes). Choose a new "
                    "--run folder, or delete this one to start over."
                )
            return run
        run.path.mkdir(parents=True, exist_ok=True)
        content = [{key: item[key] for key in ("item_id", "text", "image")} for item in items]
        run._write_lines("items.jsonl", (json.dumps(row, ensure_ascii=False) for row in content))
        if any(item.get("gold") not in (None, "") for item in items):
            run.write_table("oracle.csv", {"item_id": ids, "gold": [item.get("gold") for item in items]})
        run.write_manifest(
            dict(version=1, created=_now(), classes=classes, settings=settings, steps={})
        )
        return run

    def manifest(self):
        path = self.path / MANIFEST
        if not path.exists():
            raise RunFolderError(
                f"{self.path} is not a run folder (no {MANIFEST}). Start one with `act-sklearn annotate`."
            )
        return json.loads(path.read_text(encoding="utf-8"))

    def write_manifest(self, manifest):
        write_atomically(self.path / MANIFEST, lambda f: json.dump(manifest, f, indent=2, ensure_ascii=False))

    def finish_step(self, step, **details):
        """Record that ``step`` finished, with what it used (settings) and produced (counts)."""
        manifest = self.manifest()
        manifest["steps"][step] = dict(finished=_now(), **details)
        self.write_manifest(manifest)

    def require(self, *steps):
        """Raise a clear error unless every one of ``steps`` has finished."""
        done = self.manifest()["steps"]
        missing = [step for step in steps if step not in done]
        if missing:
            raise RunFolderError(
                f"{self.path}: run `act-sklearn {missing[0]}` first (steps finished: "
                f"{sorted(done) or 'none'})."
            )

    # -- items and tables ----------------------------------------------------------

    def items(self):
        with open(self.path / "items.jsonl", encoding="utf-8") as file:
            return [json.loads(line) for line in file if line.strip()]

    def item_ids(self):
        return [item["item_id"] for item in self.items()]

    def classes(self):
        return self.manifest()["classes"]

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
        header = next(reader)
        columns = {n: [] for n in header}
        for row in reader:
            for n, value in zip(header, row):
                columns[n].append(value)
        return columns

    def reviews(self):
        """Human labels taken so far: item_id -> label (as text)."""
        table = self.read_table("reviews.csv")
        return dict(zip(table.get("item_id", []), table.get("human_label", [])))

    def add_reviews(self, taken, source):
        """Append newly taken answers; earlier answers are kept as they are."""
        table = self.read_table("reviews.csv") or {"item_id": [], "human_label": [], "source": []}
        known = set(table["item_id"])
        for item_id, label in taken.items():
            if item_id not in known:
                table["item_id"].append(item_id)
                table["human_label"].append(str(label))
                table["source"].append(str(source))
        self.write_table("reviews.csv", table)

    def _write_lines(self, name, lines):
        write_atomically(self.path / name, lambda f: f.writelines(line + "\n" for line in lines))


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
