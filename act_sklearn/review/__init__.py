"""Human review I/O: review sheets (CSV/JSONL) and Label Studio tasks out, answers back in."""

from .collect import ReviewImport, collect_reviews, read_reviews
from .files import write_review_sheet
from .label_studio import image_reference, label_studio_tasks, labeling_config, write_label_studio_tasks
from .records import Review, ReviewFileError

__all__ = [
    "Review",
    "ReviewFileError",
    "ReviewImport",
    "collect_reviews",
    "image_reference",
    "label_studio_tasks",
    "labeling_config",
    "read_reviews",
    "write_label_studio_tasks",
    "write_review_sheet",
]
