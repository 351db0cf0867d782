"""The downstream models the command trains when the user gives none: simple, fast, ACT-loss learners."""

import numpy as np

IMAGE_SIZE = (28, 28)


def default_text_model():
    """TF-IDF features and the ACT loss, with its default clip and neighbour spread."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline

    from ..models.linear import ACTLogisticRegression

    return make_pipeline(TfidfVectorizer(sublinear_tf=True), ACTLogisticRegression(C=10.0, max_iter=500))


def default_image_model():
    """Grey pixels of the image files (28 x 28, scaled to [0, 1]) and the ACT loss with its defaults.

    A baseline that trains in seconds; for real image work, train a network
    (:class:`~act_sklearn.ACTNeuralNetClassifier`) on the run's labels in Python.
    """
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from ..models.linear import ACTLogisticRegression

    return make_pipeline(FunctionTransformer(image_pixels), ACTLogisticRegression(C=1.0, max_iter=500))


def image_pixels(paths, size=IMAGE_SIZE):
    """One row of grey pixel intensities in [0, 1] per image file."""
    from PIL import Image

    rows = []
    for path in np.asarray(paths, dtype=object).ravel():
        with Image.open(path) as image:
            rows.append(np.asarray(image.convert("L").resize(size), dtype=np.float64).ravel() / 255.0)
    return np.array(rows).reshape(len(rows), size[0] * size[1])
