"""How torch's OpenMP threads wait (modalrec/__init__.py): spin briefly on an idle machine, sleep otherwise."""

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
    # tests/conftest.py sets OMP_WAIT_POLICY=PASSIVE before modalrec is imported: modalrec keeps it
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert modalrec.WAIT_POLICY.get("OMP_WAIT_POLICY") == "PASSIVE" and "GOMP_SPINCOUNT" not in os.environ
