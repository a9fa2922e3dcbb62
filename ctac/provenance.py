"""Where a result comes from: the provenance record every JSON result carries (the API's and
the CLI's alike) and how a run is recorded in it. Apart from ctac/api.py so that `ctac run`,
which writes these records, does not import the compiler the API also drives."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctac import __version__
from ctac.hw import Hardware
from ctac.hw_overrides import hardware_name


@dataclass(frozen=True)
class Provenance:
    """Where a result comes from, so results of many runs can be aggregated. One flat record
    (`to_dict`) in every JSON result, the API's and the CLI's alike (run --json, profile.json,
    compare --json): its identity keys are flat and named like the columns of a sweep's table
    (model_path, model_sha256, hardware, hardware_config, hardware_sha256, ctac_version), so
    records of many runs and sweep rows make one pandas table (`pd.json_normalize(records)`;
    settings become settings.tau, ...) that groups and joins on those columns as they are.
    `settings` says how the result was made; its keys depend on the command."""

    model_path: str | None  # the ONNX file, resolved (None: a program that does not record it)
    model_sha256: str | None
    program: str | None  # the .ctab file the CLI ran (None: compiled in memory)
    hardware: str  # accelerator.name of the config
    hardware_config: str  # where the config came from, with any overrides
    hardware_sha256: str
    ctac_version: str
    settings: dict

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)  # a deep copy: settings included


def provenance(
    model_path: str | Path | None,
    model_sha256: str | None,
    hw: Hardware,
    settings: Mapping[str, Any],
    program: str | Path | None = None,
) -> Provenance:
    """The one maker of provenance records, for the API's results and the CLI's JSON."""
    return Provenance(
        None if model_path is None else str(model_path), model_sha256,
        None if program is None else str(program), hardware_name(hw), hw.path,
        hw.digest.hex(), __version__, dict(settings),
    )  # fmt: skip


def run_settings(
    timing_only: bool, seed: int, cluster_ratio: float | None, settings_file: str | Path | None
) -> dict:
    """How a program ran, as `run` and `ctac profile` record it: functional runs by their seed,
    timing-only runs by what sized CTA's data-dependent work."""
    record: dict[str, Any] = {
        "timing_only": bool(timing_only),
        "seed": None if timing_only else seed,
    }
    if timing_only:
        record["timing_cluster_ratio"] = cluster_ratio
        if settings_file is not None:
            record["timing_settings_file"] = str(settings_file)
    return record
