"""PHYSLITE: coffea's PHYSLITESchema over a real ATLAS DAOD_PHYSLITE sample."""

from __future__ import annotations

import awkward as ak
from coffea.nanoevents import NanoEventsFactory, PHYSLITESchema
from common import DATA, on_cluster_and_alone, report

FILE = {f"{DATA}/PHYSLITE_example.root": "CollectionTree"}
GEV = 1000.0  # PHYSLITE stores MeV


def build() -> dict:
    # Two partitions, so both workers get one. (Electrons are left out: coffea 2026.9 fails
    # to read PHYSLITE electrons in more than one partition, "size of array is less than
    # size of form".)
    events = NanoEventsFactory.from_root(
        FILE, schemaclass=PHYSLITESchema, mode="dask", steps_per_file=2
    ).events()
    jets = events.Jets[(events.Jets.pt > 20 * GEV) & (abs(events.Jets.eta) < 2.5)]
    photons = events.Photons[events.Photons.pt > 10 * GEV]
    taus = events.TauJets[events.TauJets.pt > 10 * GEV]
    return {
        "events": ak.sum(ak.num(events.Jets, axis=1) >= 0),
        "jets": ak.sum(ak.num(jets, axis=1)),
        "jet_pt_sum_gev": ak.sum(jets.pt) / GEV,
        "events_with_2_jets": ak.sum(ak.num(jets, axis=1) >= 2),
        "photons": ak.sum(ak.num(photons, axis=1)),
        "taus": ak.sum(ak.num(taus, axis=1)),
    }


report(*on_cluster_and_alone(build))
