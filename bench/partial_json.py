"""A pytest plugin (bench/conftest.py imports its hooks): with --benchmark-json PATH,
PATH.partial holds every benchmark finished so far. pytest-benchmark writes PATH only when the
session ends, so a run that a time limit kills (bench/gpu_session.sh's parts, on a device lent
for minutes) lost every number it had measured; gpu_session.sh keeps the partial file then."""

from __future__ import annotations

from pathlib import Path

import pytest

from minitflow.files import write_bytes  # temp file + rename


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    """With --benchmark-json PATH, PATH.partial holds every benchmark finished so far, rewritten
    after each (temp file + rename): pytest-benchmark writes PATH only when the session ends, so a
    run that a time limit kills (bench/gpu_session.sh's parts) lost what it had measured."""
    result = yield
    bs = getattr(item.config, "_benchmarksession", None)
    if bs is None or not bs.json or not bs.benchmarks:
        return result
    from pytest_benchmark.utils import safe_dumps

    hook = item.config.hook
    if not hasattr(bs, "partial_info"):  # machine and commit info: once, as handle_saving reads them
        commit_info = hook.pytest_benchmark_generate_commit_info(config=item.config)
        hook.pytest_benchmark_update_commit_info(config=item.config, commit_info=commit_info)
        bs.partial_info = (bs.get_machine_info(), commit_info)
    machine_info, commit_info = bs.partial_info
    output = hook.pytest_benchmark_generate_json(config=item.config, benchmarks=bs.benchmarks, include_data=True,
                                                  machine_info=machine_info, commit_info=commit_info)
    hook.pytest_benchmark_update_json(config=item.config, benchmarks=bs.benchmarks, output_json=output)
    write_bytes(bs.json.name + ".partial", safe_dumps(output, ensure_ascii=True, indent=4).encode())
    return result


def pytest_sessionfinish(session: pytest.Session) -> None:
    """pytest-benchmark has written the whole JSON by now (its hookwrapper runs first): the partial
    one is no longer needed."""
    bs = getattr(session.config, "_benchmarksession", None)
    if bs is not None and bs.json:
        Path(bs.json.name + ".partial").unlink(missing_ok=True)
