"""Episodes keep large CPU buffers in the heap (``esper_ab.episodes._memory``): fewer page
faults, the same tables bit for bit. Each check runs in a fresh interpreter, because the
setting is the process's and a pytest process has already allocated and freed plenty."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import textwrap

import pytest

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc malloc only")


def _python(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


FAULTS = """
    import json, resource, torch
    from esper_ab.episodes._memory import raise_thresholds

    def faults(n_bytes):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(8):
            t = torch.empty(n_bytes // 4)
            t.fill_(1.0)          # first touch: one fault per page that is new
            del t
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    size = 64 << 20               # above glibc's largest dynamic mmap threshold (32 MiB)
    plain = faults(size)
    applied = raise_thresholds()
    faults(size)                  # the heap grows once
    raised = faults(size)
    print(json.dumps({"plain": plain, "raised": raised, "applied": applied,
                      "pages": size // 4096}))
"""


@glibc
def test_raised_thresholds_reuse_a_freed_large_buffer_instead_of_faulting_it_in_again():
    r = _python(FAULTS)
    assert r["applied"] is True
    # without: every allocation is a fresh mapping, every page faults again
    assert r["plain"] >= 6 * r["pages"]
    # with: the freed block is reused from the heap; no page of it faults again
    assert r["raised"] < r["pages"] // 4


TRIM = """
    import json, torch
    from esper_ab.episodes._memory import reused_buffers

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    with reused_buffers() as applied:
        t = torch.ones(100 << 18)         # 100 MiB, now served from the heap
        del t
        kept = rss_mb()
    after = rss_mb()
    print(json.dumps({"applied": applied, "kept": kept, "after": after}))
"""


@glibc
def test_the_heap_is_given_back_when_the_block_of_training_ends():
    r = _python(TRIM)
    assert r["applied"] is True
    assert r["kept"] - r["after"] > 80    # the freed 100 MiB stayed until the block ended


EPISODE = """
    import hashlib, json, sys, torch
    torch.set_num_threads(1)
    from esper_ab.episodes import runner
    config = runner.episode_config("synthetic-cnn", size="tiny",
                                   slots=("block1.post_pool", "block2.pre_pool"))
    config.batched_forks                       # decide the forks before timing anything
    compute = runner._compute_episode if RAISED else runner._compute_episode.__wrapped__
    result = compute(config, replicate=3, device=torch.device("cpu"), cache_root=None,
                     progress=None)
    tables = result.seeds.to_csv().encode() + result.trace.to_csv().encode()
    print(json.dumps({"sha": hashlib.sha256(tables).hexdigest(), "rows": len(result.seeds)}))
"""


@glibc
def test_an_episode_with_reused_buffers_is_bit_identical_to_one_without():
    plain = _python("RAISED = False\n" + textwrap.dedent(EPISODE))
    raised = _python("RAISED = True\n" + textwrap.dedent(EPISODE))
    assert plain["rows"] > 10
    assert raised == plain
