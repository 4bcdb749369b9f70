"""The simulated county's institutions are the county's institution register (config/organizations.csv)."""

from __future__ import annotations

from core.organizations import organizations
from simulator.world import build_institutions

HEALTH_COMMISSION = "410182000"  # in the register (it owns platform-wide records), not a care provider


def test_every_simulated_institution_is_registered_with_the_same_facts():
    register = organizations()
    simulated = {i.org_code: i for i in build_institutions()}
    assert set(register) - set(simulated) == {HEALTH_COMMISSION}
    differing = {
        code: (inst, register.get(code))
        for code, inst in simulated.items()
        if register.get(code) is None
        or (inst.name, inst.level, inst.org_type, inst.township, inst.parent_code, str(inst.open_beds))
        != tuple(
            register[code][k] for k in ("org_name", "org_level", "org_type", "township", "parent_org_code", "open_beds")
        )
    }
    assert differing == {}, "change config/organizations.csv and simulator/world.py together"
