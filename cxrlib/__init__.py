"""cxrlib: a reproducible study of diffusion-model synthetic chest X-rays for classifier training.

The library behind the notebooks and the book: datasets (an embedded phantom CXR simulation and
loaders for real datasets), generators, classifiers, metrics, statistics, fidelity, and one function
per experiment. See the README and the rendered book.
"""

__version__ = "0.1.0"
