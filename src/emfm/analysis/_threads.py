"""One BLAS thread for the analysis' many small linear-algebra calls.

numpy and scipy wheels each bundle their own OpenBLAS, and each starts a pool of threads that spin while
they wait. Once both are loaded, two pools compete for the same cores: measured here (2 cores, shared),
``numpy.linalg.eigh`` of a 384 x 384 covariance took 1-2 s instead of 0.02 s, and a logistic regression
on 20000 x 384 patches took 1.0 s instead of 0.18 s. The analysis makes hundreds of such calls on
small matrices, where one thread loses nothing. The limit holds only inside the decorated function
(threadpoolctl restores the previous setting), and torch's own threads are not touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Limit numpy's and scipy's BLAS libraries to one thread for the duration (usable as a decorator)."""
    import scipy.linalg  # noqa: F401  (threadpoolctl limits only libraries already loaded: load scipy's now)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield
