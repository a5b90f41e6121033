"""The one-BLAS-thread limit holds inside the decorated call and is lifted after it."""

from __future__ import annotations

from threadpoolctl import threadpool_info

from emfm.analysis._threads import single_threaded_blas


def _blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def test_limit_is_scoped():
    before = _blas_threads()

    @single_threaded_blas()
    def inside() -> list[int]:
        return _blas_threads()

    seen = inside()
    assert seen and all(n == 1 for n in seen)
    assert _blas_threads()[: len(before)] == before
