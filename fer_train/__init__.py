"""fer_train: train, evaluate and export facial-expression classifiers.

Importing the package is cheap and torch-free; the modules that need torch import it themselves.
"""

__version__ = "0.1.0"
