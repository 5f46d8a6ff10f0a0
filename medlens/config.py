"""The medlens run configuration: a YAML file validated into typed sections.

Unknown keys are errors (a typo must never be silently ignored), and every error
names the file, the dotted field path, what was expected and what was found.
Relative paths are resolved against the folder that holds the YAML file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ._errors import ConfigError

__all__ = [
    "DataConfig",
    "HeadConfig",
    "MedlensConfig",
    "ModelConfig",
    "PreprocessConfig",
    "WindowConfig",
    "load_config",
    "parse_config",
]

UNKNOWN_KEY = "unknown key {key!r}; valid keys here: {valid}. Check the spelling."


class _Section(BaseModel):
    # NaN / inf are never meaningful settings (a NaN std would silently give NaN inputs)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class WindowConfig(_Section):
    """A VOI window in modality units (e.g. HU for CT): centre and width."""

    center: float
    width: float = Field(gt=0)


class DataConfig(_Section):
    """Where the images are and how cases, patients and cohorts are found.

    Give either ``manifest`` (a CSV: path, label, patient_id, study_id, cohort columns)
    or ``dicom_dir`` (a folder whose headers build the manifest). ``labels`` is a CSV
    joined onto a folder scan by ``path`` (paths relative to the CSV's folder); its
    other columns (split, masks, extra cohort columns) are carried over, and columns
    whose name ends in ``_mask`` are paths resolved the same way. ``site_names`` maps
    InstitutionName to a readable site label (otherwise the site is a salted key).
    """

    manifest: Path | None = None
    dicom_dir: Path | None = None
    labels: Path | None = None
    root: Path | None = None
    site_names: dict[str, str] = {}
    pseudonym_salt: str = Field(min_length=8)
    label_column: str = "label"
    split_column: str | None = "split"
    test_split: str = "test"
    cohort_columns: list[str] = ["site", "manufacturer", "sex", "age_band"]
    age_band_edges: list[int] = [0, 40, 60, 80]

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if (self.manifest is None) == (self.dicom_dir is None):
            raise ValueError("give exactly one of 'manifest' (a CSV) or 'dicom_dir' (a folder)")
        if self.labels is not None and self.dicom_dir is None:
            raise ValueError(
                "'labels' is joined onto a 'dicom_dir' scan; a manifest has its own labels"
            )
        return self


class PreprocessConfig(_Section):
    """How a scan becomes a model input; every step is invertible for maps."""

    window: WindowConfig | None = None
    use_file_window: bool = False
    size: tuple[int, int] | None = None
    resize_mode: Literal["resize", "letterbox"] = "letterbox"
    channels: Literal[1, 3] = 1
    mean: list[float] = [0.0]
    std: list[float] = [1.0]

    @field_validator("std")
    @classmethod
    def _positive_std(cls, v: list[float]) -> list[float]:
        if any(not s > 0 for s in v):
            raise ValueError(f"every std must be > 0, got {v}")
        return v

    @field_validator("size")
    @classmethod
    def _positive_size(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and any(s < 1 for s in v):
            raise ValueError(f"both sizes (height, width) must be >= 1, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _channel_stats(self) -> PreprocessConfig:
        for name in ("mean", "std"):
            n = len(getattr(self, name))
            if n not in (1, self.channels):
                raise ValueError(f"'{name}' needs 1 or {self.channels} values, got {n}")
        return self


class HeadConfig(_Section):
    """What the model's output means."""

    type: Literal["binary_sigmoid", "binary_softmax", "multiclass", "multilabel"]
    class_names: list[str]

    @model_validator(mode="after")
    def _names_match(self) -> HeadConfig:
        n = len(self.class_names)
        if self.type.startswith("binary") and n != 2:
            raise ValueError(f"a binary head needs 2 class_names (negative, positive), got {n}")
        if not self.type.startswith("binary") and n < 2:
            raise ValueError(f"a {self.type} head needs at least 2 class_names, got {n}")
        if len(set(self.class_names)) != n:
            raise ValueError(f"class_names must be unique, got {self.class_names}")
        return self


class ModelConfig(_Section):
    """Which model to load and how to run it."""

    format: Literal["torchscript", "state_dict"]
    path: Path
    factory: str | None = None
    kwargs: dict[str, Any] = {}
    head: HeadConfig
    device: str = "auto"
    batch_size: int = Field(default=32, ge=1, strict=True)
    amp: bool = False

    @model_validator(mode="after")
    def _factory_for_state_dict(self) -> ModelConfig:
        if self.format == "state_dict" and not self.factory:
            raise ValueError(
                "format 'state_dict' needs 'factory' ('package.module:callable' or a built-in name)"
            )
        return self


class MedlensConfig(_Section):
    """A whole run: data, preprocessing, model, seed and output folder."""

    seed: int = Field(default=0, strict=True)
    output_dir: Path = Path("medlens-out")
    data: DataConfig
    preprocess: PreprocessConfig = PreprocessConfig()
    model: ModelConfig


_PATH_FIELDS = {
    ("data", "manifest"),
    ("data", "dicom_dir"),
    ("data", "labels"),
    ("data", "root"),
    ("model", "path"),
}


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    raw = dict(raw)
    if isinstance(raw.get("output_dir"), str):
        raw["output_dir"] = str(base / Path(raw["output_dir"]).expanduser())
    for section, key in _PATH_FIELDS:
        sec = raw.get(section)
        if isinstance(sec, dict) and isinstance(sec.get(key), str):
            raw[section] = {**sec, key: str(base / Path(sec[key]).expanduser())}
    return raw


# Values never echoed in error messages (they end up in logs).
_SECRET_FIELDS = frozenset({"pseudonym_salt"})


def _format_error(err: dict[str, Any], model: type[BaseModel]) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        parent: Any = model
        for part in err["loc"][:-1]:
            field = parent.model_fields.get(str(part)) if isinstance(parent, type) else None
            parent = getattr(field, "annotation", None) if field else None
            parent = next(
                (
                    a
                    for a in getattr(parent, "__args__", (parent,))
                    if isinstance(a, type) and issubclass(a, BaseModel)
                ),
                parent,
            )
        valid = (
            sorted(parent.model_fields)
            if isinstance(parent, type) and issubclass(parent, BaseModel)
            else []
        )
        return f"{loc}: " + UNKNOWN_KEY.format(key=str(err["loc"][-1]), valid=", ".join(valid))
    got = err.get("input")
    secret = err["loc"] and err["loc"][-1] in _SECRET_FIELDS
    got_txt = "" if isinstance(got, dict) or secret else f" (got {got!r})"
    return f"{loc or '(top level)'}: {err['msg']}{got_txt}"


def parse_config(raw: Any, *, source: str = "<config>", base: Path | None = None) -> MedlensConfig:
    """Validate a mapping (e.g. parsed YAML) into a :class:`MedlensConfig`.

    Raises
    ------
    ConfigError
        Naming ``source`` and every offending field.
    """
    if not isinstance(raw, dict):
        raise ConfigError(
            f"expected a mapping at the top level, got {type(raw).__name__}", source=source
        )
    if base is not None:
        raw = _resolve_paths(raw, base)
    try:
        return MedlensConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [_format_error(e, MedlensConfig) for e in exc.errors()]
        raise ConfigError(
            "invalid configuration:\n  " + "\n  ".join(lines), source=source
        ) from None


def load_config(path: str | Path) -> MedlensConfig:
    """Read and validate a YAML config file; relative paths are taken from its folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read the config file ({exc.strerror})", source=str(path)
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not a text file (byte {exc.start} is not UTF-8); expected a YAML config",
            source=str(path),
        ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", source=str(path)) from None
    return parse_config(raw, source=str(path), base=path.resolve().parent)
