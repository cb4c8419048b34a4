"""Process-level settings of modalrec/__init__.py: how torch's OpenMP threads wait (spin briefly on an idle machine,
sleep otherwise) and malloc keeping freed blocks for reuse."""

import os

import modalrec


def test_spin_only_when_every_cpu_is_idle():
    assert modalrec.wait_policy(2.0, 2) == {"GOMP_SPINCOUNT": "10000"}
    assert modalrec.wait_policy(1.6, 2) == {"GOMP_SPINCOUNT": "10000"}  # sampling noise of an idle machine
    assert modalrec.wait_policy(1.0, 2) == {"OMP_WAIT_POLICY": "PASSIVE"}  # another process holds a core
    assert modalrec.wait_policy(0.2, 2) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert modalrec.wait_policy(None, 2) == {"OMP_WAIT_POLICY": "PASSIVE"}  # unknown: the safe choice


def test_idle_cpus_is_a_fraction_of_the_machine():
    idle = modalrec.idle_cpus(0.05)
    assert idle is None or 0.0 <= idle <= (os.cpu_count() or 1) + 1e-9


def test_a_users_setting_wins():
    # tests/conftest.py sets OMP_WAIT_POLICY (PASSIVE unless the environment has it) before modalrec is imported:
    # modalrec keeps what it found and adds nothing
    assert "OMP_WAIT_POLICY" in os.environ
    assert modalrec.WAIT_POLICY == {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
                                    if k in os.environ}


def test_keep_freed_memory_applies_once_and_respects_a_users_tunables(monkeypatch):
    import sys

    applied = modalrec.keep_freed_memory()
    assert modalrec.keep_freed_memory() is applied  # idempotent
    if sys.platform.startswith("linux") and not any(k.startswith("MALLOC_") or k == "GLIBC_TUNABLES"
                                                     for k in os.environ):
        try:
            import ctypes

            glibc = hasattr(ctypes.CDLL("libc.so.6"), "mallopt")
        except OSError:
            glibc = False
        assert applied is glibc
    monkeypatch.setattr(modalrec, "_MALLOC_KEPT", None)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")  # the user tunes malloc: modalrec leaves it alone
    assert modalrec.keep_freed_memory() is False
