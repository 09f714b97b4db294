"""polar4d: machine learning of ferroelectric polarization in KNN from 4D-STEM diffraction patterns."""

from polar4d_lib import config

__version__ = "0.1.0"

__all__ = ["config", "__version__"]
