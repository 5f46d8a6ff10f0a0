from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def proc_reference() -> dict:
    return json.loads((FIXTURES / "proc_reference.json").read_text())


def proc_dataset(name: str) -> pd.DataFrame:
    return pd.read_csv(FIXTURES / f"proc_dataset_{name}.csv")


def predictions_frame(n: int = 400, n_patients: int = 160, seed: int = 0) -> pd.DataFrame:
    """A synthetic predictions table shaped like the output of `medlens demo`."""
    rng = np.random.default_rng(seed)
    pat = rng.integers(0, n_patients, n)
    y = (rng.random(n) < 0.35).astype(int)
    s = np.clip(np.round(0.3 * y + 0.7 * rng.random(n), 3), 0, 1)
    return pd.DataFrame(
        {
            "case_id": [f"case{i:04d}" for i in range(n)],
            "patient_key": [f"pk{p:04d}" for p in pat],
            "split": np.where(rng.random(n) < 0.75, "test", "tuning"),
            "label": y,
            "score": s,
            "site": np.array(["A", "B", "C"])[pat % 3],
            "manufacturer": rng.choice(["GE", "Siemens", "Philips"], n),
            "sex": np.array(["F", "M"])[pat % 2],
            "age_band": rng.choice(["0-40", "40-60", "60-80", "80+"], n),
        }
    )
