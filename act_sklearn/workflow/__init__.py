"""The labelling job: a run folder and the steps of the ``act-sklearn`` command on it.

This sub-package is an application on top of the library: it reads item files,
keeps a job's state in a run folder, runs the annotate, criticize, select,
export, import and train steps, simulates reviewers, writes the report and its
plots, runs the offline demo and the command line. Nothing in the library
imports it; deleting it leaves every estimator working.
"""

from .run_folder import RunFolder, RunFolderBusy, RunFolderError
from .steps import annotate, criticize, export, import_reviews, review_with_oracle, select, train

__all__ = [
    "RunFolder",
    "RunFolderBusy",
    "RunFolderError",
    "annotate",
    "criticize",
    "export",
    "import_reviews",
    "review_with_oracle",
    "select",
    "train",
]
