"""gapkit: close the label gap and the domain gap between synthetic and real facial-landmark data.

Coordinate convention, stated once: points are float arrays of shape (K, 2), or (N, K, 2)
batched, in 0-based pixel (x, y) with the origin at the top-left corner of the top-left
pixel. NaN marks a missing point. Readers and writers convert to and from file conventions.
"""

from gapkit.version import __version__

__all__ = ["__version__"]
