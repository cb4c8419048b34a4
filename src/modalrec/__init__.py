"""modalrec: reproducible multi-modal sequential recommendation (KDSR, ODMT and baselines)."""

import os as _os
import time as _time

_LOADED = _time.perf_counter()


def idle_cpus(sample: float = 0.1) -> float | None:
    """How many CPUs were idle over the next ``sample`` seconds (``/proc/stat``; None where it cannot be read)."""
    def read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[3] + (v[4] if len(v) > 4 else 0), sum(v)  # idle + iowait, all

    try:
        i0, t0 = read()
        _time.sleep(sample)
        i1, t1 = read()
    except (OSError, ValueError, IndexError):
        return None
    return (_os.cpu_count() or 1) * (i1 - i0) / max(t1 - t0, 1)


def wait_policy(idle: float | None, n_cpus: int) -> dict[str, str]:
    """The OpenMP waiting of torch's CPU threads for a machine with ``idle`` of ``n_cpus`` CPUs idle.

    Threads that spin between parallel regions are 1.5-1.9x faster on an idle 2-core machine than threads that sleep
    (synthetic default, ms per step: SASRec 16.7 vs 31.5, ODMT 163 vs 247 with ``GOMP_SPINCOUNT=10000`` vs
    ``OMP_WAIT_POLICY=PASSIVE``), and 2-10x slower when another process holds a core (SASRec 68 vs 30 ms; libgomp's
    default spinning: 5-10x). So: spin briefly when the CPUs are idle, sleep when anything else runs."""
    if idle is not None and idle >= n_cpus - 0.5:
        return {"GOMP_SPINCOUNT": "10000"}
    return {"OMP_WAIT_POLICY": "PASSIVE"}


# Read once when torch loads OpenMP, so it is set here, before any modalrec module imports torch; a user's own
# OMP_WAIT_POLICY or GOMP_SPINCOUNT wins. The pipeline's stages run one at a time, so each process samples the
# machine as its stage starts (0.1 s).
if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    WAIT_POLICY = wait_policy(idle_cpus(), _os.cpu_count() or 1)
    _os.environ.update(WAIT_POLICY)
else:
    WAIT_POLICY = {k: _os.environ[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in _os.environ}

__version__ = "0.1.0"

_MALLOC_KEPT: bool | None = None


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed blocks for reuse instead of handing them back to the kernel (a training loop
    allocates and frees the same activation-sized blocks every step). By default blocks above a moving threshold
    are mmap-ed and unmapped on free, and the heap top is trimmed at 128 KiB, so each step faults its activations
    in again page by page: on the synthetic default 22k minor faults and 65 ms of system time per ODMT step, 15k
    and 28 ms per SASRec+LF step. With blocks up to 32 MiB (glibc's maximum) served from the heap, the heap grown
    256 MiB at a time and trimmed only above 1 GiB: 5k faults, 7 ms (ODMT; CPU per step -10%), 3.5k, 3 ms
    (SASRec+LF, -4%). Only where it changes nothing but speed: Linux with glibc, and not when the user set a
    malloc tunable (``MALLOC_*``, ``GLIBC_TUNABLES``). Returns whether it applied; idempotent."""
    global _MALLOC_KEPT
    if _MALLOC_KEPT is None:
        _MALLOC_KEPT = False
        if not any(k.startswith("MALLOC_") or k == "GLIBC_TUNABLES" for k in _os.environ):
            try:
                import ctypes

                libc = ctypes.CDLL("libc.so.6")
                m_trim, m_top_pad, m_mmap = -1, -2, -3  # malloc.h: M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD
                _MALLOC_KEPT = bool(libc.mallopt(m_mmap, 32 << 20) and libc.mallopt(m_trim, 1 << 30)
                                    and libc.mallopt(m_top_pad, 256 << 20))
            except (OSError, AttributeError):
                pass
    return _MALLOC_KEPT


_LAST_SUMMARY: float | None = None


def wall_seconds() -> float:
    """A stage's wall time, for the end of its one-line summary: for a process's first summary, the seconds since
    the process loaded modalrec (a DVC stage's whole wall time, interpreter and torch start-up included); for a later
    one (several stages run from one Python process, e.g. a notebook or the tests), the seconds since the previous
    summary, not the process's total."""
    global _LAST_SUMMARY
    now = _time.perf_counter()
    start, _LAST_SUMMARY = (_LAST_SUMMARY if _LAST_SUMMARY is not None else _LOADED), now
    return now - start
