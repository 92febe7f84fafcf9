"""pyHEP: coffea's NanoAOD schema over a real CMS NanoAOD Drell-Yan sample: Z -> mu mu."""

from __future__ import annotations

import awkward as ak
from coffea.nanoevents import NanoAODSchema, NanoEventsFactory
from common import DATA, on_cluster_and_alone, report

FILE = {f"{DATA}/nano_dy.root": "Events"}


def build() -> dict:
    events = NanoEventsFactory.from_root(
        FILE, schemaclass=NanoAODSchema, mode="dask", steps_per_file=2
    ).events()
    muons = events.Muon[(events.Muon.pt > 5) & (abs(events.Muon.eta) < 2.4)]
    pairs = ak.combinations(muons, 2, fields=["a", "b"])
    pairs = pairs[pairs.a.charge != pairs.b.charge]
    mass = (pairs.a + pairs.b).mass
    return {
        "events": ak.sum(ak.num(events.Muon, axis=1) >= 0),
        "muons": ak.sum(ak.num(muons, axis=1)),
        "opposite_sign_pairs": ak.sum(ak.num(mass, axis=1)),
        "z_candidates": ak.sum(ak.sum((mass > 60) & (mass < 120), axis=1)),
        "mass_sum": ak.sum(mass),
    }


report(*on_cluster_and_alone(build))
