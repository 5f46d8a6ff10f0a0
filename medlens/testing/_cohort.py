"""A synthetic chest-radiograph-like cohort written as real DICOM files.

The generator exists so that every part of medlens (ingest, prediction, explanation
audits, validation by cohort) can be exercised end to end on data whose ground truth
is known exactly: which images hold a lesion and where (lesion masks), where the lung
fields are (anatomy masks) and whether a site-specific shortcut was planted.

Every patient, image and UID is drawn from its own seeded stream
(``numpy.random.SeedSequence(seed, spawn_key=...)``), so

* the same arguments give byte-identical files;
* patient ``i`` is the same patient whatever ``n_patients`` is, and stays in the
  same split: a cohort of 100 patients is a prefix of a cohort of 1000 patients with
  the same seed, so a model trained on the train split of the large cohort never
  sees the test patients of the small one;
* ``shortcut=False`` gives the same images as ``shortcut=True`` without the burned-in
  marker (the marker draws are made either way), a ready-made counterfactual.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ComputedRadiographyImageStorage as CRImageStorage
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from scipy import ndimage

from .._errors import InputDataError, param_error

__all__ = [
    "GROUND_TRUTH_COLUMNS",
    "SITES",
    "ShortcutSpec",
    "SiteProfile",
    "SyntheticCohort",
    "make_synthetic_cohort",
]

GENERATOR_VERSION = "1"
GROUND_TRUTH_COLUMNS = (
    "path",
    "label",
    "split",
    "lesion_mask",
    "anatomy_mask",
    "shortcut_present",
)
SPLITS = ("train", "tune", "test")
# Patients are assigned in blocks of ten: six train, two tune, two test per block.
_SPLIT_BLOCK = ("train",) * 6 + ("tune",) * 2 + ("test",) * 2
_IMAGES_PER_PATIENT_P = (0.5, 0.3, 0.2)  # 1, 2 or 3 images
_P_PATIENT_DISEASED = 0.42
_P_IMAGE_LESION_IF_DISEASED = 0.85
_MODALITY_FULL_SCALE = 4095.0  # modality value of density 1.0 (all sites, after rescale)
_STUDY_EPOCH = _dt.date(2021, 1, 4)

OUT_DIR_NOT_EMPTY = (
    "{path} already exists and is not empty; give a new or empty folder "
    "(the generator never overwrites files)."
)
UNKNOWN_SHORTCUT_SITE = "unknown shortcut_site {got!r}; choose one of {valid}."


@dataclass(frozen=True)
class SiteProfile:
    """How one simulated hospital acquires and stores its radiographs.

    Parameters
    ----------
    code : str
        Short site code used in the cohort metadata (e.g. ``"site_a"``).
    institution : str
        ``InstitutionName`` written to the headers (what a folder scan calls the site).
    manufacturer, model_name : str
        ``Manufacturer`` and ``ManufacturerModelName``.
    photometric : str
        ``"MONOCHROME2"`` (high value = bright) or ``"MONOCHROME1"`` (stored values
        inverted: high value = dark).
    bits_stored : int
        ``BitsStored`` (stored values are clipped to this many bits).
    rescale_slope, rescale_intercept : float
        Modality LUT: modality value = slope * stored + intercept. Every site maps
        tissue density onto the same modality scale (density 1.0 = 4095), so one
        VOI window fits all sites once the Modality LUT has been applied.
    gain, offset : float
        Site contrast: modality value = 4095 * (offset + gain * density).
    noise : float
        Standard deviation of the additive detector noise, in density units.
    weight : float
        Relative share of patients examined at this site.
    window_center, window_width : float
        The site's own display hint (``WindowCenter`` / ``WindowWidth``), in modality
        units; deliberately different between sites.
    lesion_contrast : tuple of float
        Range of the lesions' peak density increase at this site (fainter = harder).
    """

    code: str
    institution: str
    manufacturer: str
    model_name: str
    photometric: str
    bits_stored: int
    rescale_slope: float
    rescale_intercept: float
    gain: float
    offset: float
    noise: float
    weight: float
    window_center: float
    window_width: float
    lesion_contrast: tuple[float, float]


SITES: tuple[SiteProfile, ...] = (
    SiteProfile(
        code="site_a",
        institution="Northgate General Hospital",
        manufacturer="Heliant Medical",
        model_name="HX-CR 900",
        photometric="MONOCHROME2",
        bits_stored=12,
        rescale_slope=1.0,
        rescale_intercept=0.0,
        gain=1.0,
        offset=0.0,
        noise=0.015,
        weight=0.30,
        window_center=2048.0,
        window_width=4096.0,
        lesion_contrast=(0.15, 0.32),
    ),
    SiteProfile(
        code="site_b",
        institution="St Brigid Regional Hospital",
        manufacturer="Corvel Imaging",
        model_name="Corvel DR-14",
        photometric="MONOCHROME2",
        bits_stored=14,
        rescale_slope=0.25,
        rescale_intercept=0.0,
        gain=0.9,
        offset=0.05,
        noise=0.02,
        weight=0.30,
        window_center=1900.0,
        window_width=3000.0,
        lesion_contrast=(0.015, 0.045),
    ),
    SiteProfile(
        code="site_c",
        institution="Lakeside Chest Clinic",
        manufacturer="Ostara Systems",
        model_name="OSX Flex",
        photometric="MONOCHROME1",
        bits_stored=12,
        rescale_slope=2.0,
        rescale_intercept=-1000.0,
        gain=1.1,
        offset=-0.03,
        noise=0.01,
        weight=0.20,
        window_center=1500.0,
        window_width=3500.0,
        lesion_contrast=(0.15, 0.32),
    ),
    SiteProfile(
        code="site_d",
        institution="Westmoor Community Hospital",
        manufacturer="Quantis Health",
        model_name="QR-Digital 3",
        photometric="MONOCHROME2",
        bits_stored=10,
        rescale_slope=4.5,
        rescale_intercept=-50.0,
        gain=0.85,
        offset=0.06,
        noise=0.03,
        weight=0.20,
        window_center=2200.0,
        window_width=3800.0,
        lesion_contrast=(0.14, 0.30),
    ),
)


@dataclass(frozen=True)
class ShortcutSpec:
    """A burned-in text token planted at one site, correlated with the label.

    Parameters
    ----------
    site : str
        Code of the site whose images may carry the token.
    text : str
        The burned-in text (drawn with a 3x5 pixel font).
    corner : str
        Where it is drawn: ``"top_left"``.
    box : tuple of int
        ``(row0, row1, col0, col1)`` of the token on the image grid (half-open).
    p_positive, p_negative : float
        Probability that a lesion-positive / lesion-negative image at that site carries
        the token.
    """

    site: str
    text: str
    corner: str
    box: tuple[int, int, int, int]
    p_positive: float
    p_negative: float


@dataclass(frozen=True)
class SyntheticCohort:
    """What :func:`make_synthetic_cohort` wrote.

    Attributes
    ----------
    root : Path
        The cohort folder.
    dicom_dir : Path
        Folder holding the DICOM files (``root / "dicom"``); nothing else is in it.
    ground_truth : Path
        CSV with :data:`GROUND_TRUTH_COLUMNS`; paths relative to ``root``. It holds no
        patient identifier.
    metadata : Path
        JSON with the generator parameters, the site profiles and the shortcut.
    n_patients, n_images : int
    seed, image_size : int
    sites : tuple of SiteProfile
    shortcut : ShortcutSpec or None
        The planted shortcut, or None when ``shortcut=False``.
    """

    root: Path
    dicom_dir: Path
    ground_truth: Path
    metadata: Path
    n_patients: int
    n_images: int
    seed: int
    image_size: int
    sites: tuple[SiteProfile, ...]
    shortcut: ShortcutSpec | None


# --------------------------------------------------------------------------- drawing

_FONT_3X5 = {
    "P": ("111", "101", "111", "100", "100"),
    "O": ("111", "101", "101", "101", "111"),
    "R": ("110", "101", "110", "101", "101"),
    "T": ("111", "010", "010", "010", "010"),
}
_SHORTCUT_TEXT = "PORT"


def _token_bitmap(text: str, scale: int) -> np.ndarray:
    glyphs = [np.array([[c == "1" for c in row] for row in _FONT_3X5[ch]]) for ch in text]
    gap = np.zeros((5, 1), dtype=bool)
    parts: list[np.ndarray] = []
    for g in glyphs:
        parts += [g, gap]
    bitmap = np.concatenate(parts[:-1], axis=1)
    return np.kron(bitmap, np.ones((scale, scale), dtype=bool))


def _shortcut_box(size: int, text: str) -> tuple[int, int, int, int]:
    scale = max(1, round(size / 128))
    h, w = _token_bitmap(text, scale).shape
    r0 = c0 = max(1, round(size * 0.04))
    return (r0, r0 + h, c0, c0 + w)


def _smooth_step(z: np.ndarray, width: float) -> np.ndarray:
    """1 inside (z < 0), 0 outside, with a soft edge of about ``width``."""
    return 0.5 * (1.0 - np.tanh(z / width))


@dataclass(frozen=True)
class _Rendered:
    density: np.ndarray  # (S, S) float64, tissue density in ~[0, 1]
    lungs: np.ndarray  # bool
    lesion: np.ndarray  # bool


def _render(
    rng: np.random.Generator, size: int, *, lesion: bool, contrast_range: tuple[float, float]
) -> _Rendered:
    """Draw one frontal chest radiograph (density, lung mask, lesion mask)."""
    s = size
    coords = (np.arange(s) + 0.5) / s * 2.0 - 1.0
    y0, x0 = np.meshgrid(coords, coords, indexing="ij")
    scale = rng.uniform(0.92, 1.04)
    y = (y0 - rng.normal(0.0, 0.025)) / scale
    x = (x0 - rng.normal(0.0, 0.025)) / scale
    edge = 2.0 / s  # one pixel in normalised units

    body_r = np.sqrt(((y - 0.12) / 1.02) ** 2 + (x / rng.uniform(0.80, 0.90)) ** 2)
    body = _smooth_step(body_r - 1.0, 2 * edge)
    inspiration = rng.uniform(0.9, 1.08)
    lung_h = 0.60 * inspiration
    taper = 0.78 + 0.30 * np.clip((y + 0.02) / lung_h, -1.0, 1.0)  # apex narrower than base
    lung_l = (((y + 0.02) / lung_h) ** 2 + ((x + 0.40) / (0.27 * taper)) ** 2) <= 1.0
    lung_r = (((y + 0.02) / lung_h) ** 2 + ((x - 0.41) / (0.29 * taper)) ** 2) <= 1.0
    heart_w = rng.uniform(0.26, 0.34)
    heart = (((y - 0.24) / 0.28) ** 2 + ((x - 0.12) / heart_w) ** 2) <= 1.0
    mediastinum = (np.abs(x - 0.02) < 0.14) & (y > -0.75) & (y < 0.45)
    spine = np.abs(x) < 0.075
    lungs = (lung_l | lung_r) & ~heart & ~mediastinum & ~spine & (body > 0.5)

    density = 0.06 + 0.38 * body
    density = np.where(lungs, 0.14 + rng.uniform(-0.02, 0.02), density)
    density = density + 0.20 * heart * body + 0.10 * mediastinum * body + 0.16 * spine * body
    # ribs: curved bands across both hemithoraces
    for k in range(9):
        yk = -0.72 + 0.165 * k * inspiration
        arc = yk + 0.30 * (np.abs(x) - 0.15) ** 2 - 0.05
        rib = (np.abs(y - arc) < 0.026) & (np.abs(x) > 0.12) & (np.abs(x) < 0.75)
        density = density + 0.07 * rib * body
    # heel effect / positioning: a gentle gradient
    density = density + rng.uniform(-0.03, 0.03) * x0 + rng.uniform(-0.02, 0.02) * y0
    density = ndimage.gaussian_filter(density, sigma=max(0.5, 0.6 * s / 128), mode="nearest")

    lesion_mask = np.zeros((s, s), dtype=bool)
    if lesion:
        radius = rng.uniform(0.05, 0.10) * s
        contrast = rng.uniform(*contrast_range)
        inside = ndimage.binary_erosion(lungs, iterations=max(1, int(radius * 0.5)))
        rows, cols = np.nonzero(inside if inside.any() else lungs)
        pick = rng.integers(len(rows))
        rr, cc = np.mgrid[0:s, 0:s]
        dist = np.hypot(rr - rows[pick], cc - cols[pick])
        density = density + contrast * _smooth_step(dist - radius, max(0.6, 0.25 * radius))
        lesion_mask = dist <= radius
    return _Rendered(density=density, lungs=lungs, lesion=lesion_mask)


def _to_stored(density: np.ndarray, site: SiteProfile, rng: np.random.Generator) -> np.ndarray:
    """Tissue density -> modality values -> stored values of the site (uint16)."""
    noisy = density + rng.normal(0.0, site.noise, size=density.shape)
    modality = _MODALITY_FULL_SCALE * (site.offset + site.gain * noisy)
    if site.photometric == "MONOCHROME1":
        modality = _MODALITY_FULL_SCALE - modality  # stored dark-is-high; readers invert
    stored = np.rint((modality - site.rescale_intercept) / site.rescale_slope)
    return np.clip(stored, 0, 2**site.bits_stored - 1).astype(np.uint16)


# --------------------------------------------------------------------------- people

_SURNAMES = (
    "HALVORSEN",
    "OKONKWO",
    "PETRAKIS",
    "LINDQVIST",
    "ABERNATHY",
    "MORCELLI",
    "NAKASHIMA",
    "VILLANUEVA",
    "THORNBURY",
    "KOWALCZYK",
    "DESROCHERS",
    "OYELARAN",
    "FAIRWEATHER",
    "BRANNIGAN",
    "SZYMANSKA",
    "QUIRINO",
    "HEATHCOTE",
    "ZEMLYANOV",
    "MACALLISTER",
    "ESPINOZA",
)
_GIVEN_F = ("MARGIT", "ADAEZE", "ELOISE", "ROSALIND", "INGRID", "CATALINA", "YUKIKO", "BEATRIX")
_GIVEN_M = ("TORVALD", "OBINNA", "LEANDER", "BARNABY", "CASIMIR", "EVANDER", "HIROSHI", "ROLAND")
_STREETS = ("Harbour Road", "Elm Crescent", "Quarry Lane", "Station Street", "Mill View")


def _patient_identity(rng: np.random.Generator, sex: str, age: int, first_study: _dt.date) -> dict:
    given = _GIVEN_F if sex == "F" else _GIVEN_M
    name = f"{rng.choice(_SURNAMES)}^{rng.choice(given)}^{chr(ord('A') + int(rng.integers(26)))}"
    birth = first_study - _dt.timedelta(days=int(age * 365.25 + rng.integers(1, 364)))
    return {
        "PatientName": name,
        "PatientID": f"MRN{int(rng.integers(10**7, 10**8))}",
        "PatientBirthDate": birth.strftime("%Y%m%d"),
        "ReferringPhysicianName": f"{rng.choice(_SURNAMES)}^{rng.choice(_GIVEN_F + _GIVEN_M)}",
        "address": f"{int(rng.integers(1, 400))} {rng.choice(_STREETS)}, Fairhaven",
    }


def _age_on(birth: str, day: _dt.date) -> int:
    b = _dt.datetime.strptime(birth, "%Y%m%d").date()
    return day.year - b.year - ((day.month, day.day) < (b.month, b.day))


# --------------------------------------------------------------------------- DICOM


def _uid(seed: int, *parts: object) -> str:
    return generate_uid(entropy_srcs=["medlens-synthetic", str(seed), *map(str, parts)])


def _dicom_dataset(
    stored: np.ndarray,
    site: SiteProfile,
    ident: dict,
    *,
    sex: str,
    age: int,
    study_date: _dt.date,
    uids: dict[str, str],
    view: str,
    numbers: dict[str, object],
    pixel_mm: float,
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CRImageStorage
    meta.MediaStorageSOPInstanceUID = uids["sop"]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = CRImageStorage
    ds.SOPInstanceUID = uids["sop"]
    date = study_date.strftime("%Y%m%d")
    time = f"{9 + int(numbers['hour']):02d}{int(numbers['minute']):02d}00"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = time
    ds.AccessionNumber = str(numbers["accession"])
    ds.Modality = "CR"
    ds.Manufacturer = site.manufacturer
    ds.InstitutionName = site.institution
    ds.InstitutionAddress = ident["address"]
    ds.ReferringPhysicianName = ident["ReferringPhysicianName"]
    ds.StationName = f"{site.code.upper().replace('_', '')}XR1"
    ds.StudyDescription = "CHEST"
    ds.SeriesDescription = f"CHEST {view}"
    ds.ManufacturerModelName = site.model_name
    ds.PatientName = ident["PatientName"]
    ds.PatientID = ident["PatientID"]
    ds.PatientBirthDate = ident["PatientBirthDate"]
    ds.PatientSex = sex
    ds.PatientAge = f"{age:03d}Y"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view
    ds.KVP = "110" if view == "PA" else "90"
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.StudyID = str(numbers["study_id"])
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ["L", "F"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = site.photometric
    ds.Rows, ds.Columns = stored.shape
    ds.ImagerPixelSpacing = [f"{pixel_mm:.4f}", f"{pixel_mm:.4f}"]
    ds.BitsAllocated = 16
    ds.BitsStored = site.bits_stored
    ds.HighBit = site.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.WindowCenter = f"{site.window_center:g}"
    ds.WindowWidth = f"{site.window_width:g}"
    ds.RescaleIntercept = f"{site.rescale_intercept:g}"
    ds.RescaleSlope = f"{site.rescale_slope:g}"
    ds.RescaleType = "US"
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()
    return ds


# --------------------------------------------------------------------------- main


def _check_args(
    n_patients: object, image_size: object, seed: object, shortcut_site: object
) -> None:
    func = "make_synthetic_cohort"
    if isinstance(n_patients, bool) or not isinstance(n_patients, int) or n_patients < 1:
        raise param_error("n_patients", func, "an int >= 1", n_patients)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 32:
        raise param_error("image_size", func, "an int >= 32", image_size)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise param_error("seed", func, "an int >= 0", seed)
    codes = [s.code for s in SITES]
    if shortcut_site not in codes:
        raise InputDataError(UNKNOWN_SHORTCUT_SITE.format(got=shortcut_site, valid=codes))


def _check_rates(rates: object) -> tuple[float, float]:
    try:
        pos, neg = (float(r) for r in rates)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        pos = neg = float("nan")
    if not (0.0 <= pos <= 1.0 and 0.0 <= neg <= 1.0):
        raise param_error(
            "shortcut_rates", "make_synthetic_cohort", "two probabilities in [0, 1]", rates
        )
    return pos, neg


def make_synthetic_cohort(
    out_dir: str | Path,
    *,
    n_patients: int = 300,
    image_size: int = 128,
    shortcut: bool = True,
    shortcut_site: str = "site_b",
    shortcut_rates: tuple[float, float] = (0.9, 0.08),
    seed: int = 0,
) -> SyntheticCohort:
    """Write a synthetic chest-radiograph-like cohort as real DICOM files.

    Four simulated sites (:data:`SITES`) differ in manufacturer, model, Modality LUT
    (RescaleSlope/Intercept), contrast, noise, bit depth and lesion conspicuity
    (``site_b``, the default shortcut site, has the faintest lesions, so a shortcut
    pays off there). ``site_c`` stores MONOCHROME1: its modality values are
    ``4095 - v`` where the other sites store ``v``, so after a reader's windowing and
    inversion it matches the others under any window centred on 2047.5 (such as the
    demo's full-range window); an off-centre window is mirrored for that site, as
    with real MONOCHROME1 data. Each patient has 1-3 CR images (one study
    each) with sex, age and fake identifiers (name, ID, birth date, accession number,
    referring physician, institution address) that look real, so pseudonymisation is
    exercised. About 36 % of the images hold a lesion: a blurred round opacity inside
    the lung fields. Splits (train / tune / test, 60/20/20 %) are by patient.

    Layout of ``out_dir``::

        dicom/img_00000.dcm ...           CR Image Storage, explicit VR little endian
        masks/img_00000_lesion.npy ...    bool (image_size, image_size), same grid
        masks/img_00000_lungs.npy ...     bool lung-field mask, same grid
        ground_truth.csv                  GROUND_TRUTH_COLUMNS, no identifiers
        cohort.json                       parameters, sites, shortcut

    Parameters
    ----------
    out_dir : str or Path
        A new or empty folder (created if needed).
    n_patients : int
        Number of patients (each with 1-3 images: about 1.7 images per patient).
    image_size : int
        Rows = columns of every image (>= 32).
    shortcut : bool
        Burn a text token (``"PORT"``) into the top-left corner of most lesion-positive
        and a few lesion-negative images of ``shortcut_site``. With False the images
        are identical except that no token is drawn.
    shortcut_site : str
        Code of the site that carries the shortcut.
    shortcut_rates : (float, float)
        Probability that a lesion-positive / lesion-negative image at ``shortcut_site``
        carries the token. Equal rates plant a token that says nothing about the label
        (a decorrelated control).
    seed : int
        Seed of every random draw; the same arguments give byte-identical files.

    Returns
    -------
    SyntheticCohort

    Raises
    ------
    MedlensError
        For a bad parameter or a non-empty ``out_dir``.
    """
    _check_args(n_patients, image_size, seed, shortcut_site)
    rates = _check_rates(shortcut_rates)
    root = Path(out_dir)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise InputDataError(OUT_DIR_NOT_EMPTY.format(path=root))
    dicom_dir, mask_dir = root / "dicom", root / "masks"
    dicom_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(exist_ok=True)

    token = _token_bitmap(_SHORTCUT_TEXT, max(1, round(image_size / 128)))
    box = _shortcut_box(image_size, _SHORTCUT_TEXT)
    spec = ShortcutSpec(
        site=shortcut_site,
        text=_SHORTCUT_TEXT,
        corner="top_left",
        box=box,
        p_positive=rates[0],
        p_negative=rates[1],
    )
    weights = np.array([s.weight for s in SITES])
    weights = weights / weights.sum()
    pixel_mm = 350.0 / image_size  # a 35 cm detector

    rows: list[dict[str, object]] = []
    case = 0
    for patient in range(n_patients):
        prng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, patient)))
        block = patient // len(_SPLIT_BLOCK)
        brng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, block)))
        split = _SPLIT_BLOCK[brng.permutation(len(_SPLIT_BLOCK))[patient % len(_SPLIT_BLOCK)]]
        site = SITES[int(prng.choice(len(SITES), p=weights))]
        sex = "F" if prng.random() < 0.5 else "M"
        age0 = int(np.clip(prng.normal(58, 15), 19, 92))
        n_img = int(prng.choice(3, p=_IMAGES_PER_PATIENT_P)) + 1
        diseased = prng.random() < _P_PATIENT_DISEASED
        first = _STUDY_EPOCH + _dt.timedelta(days=int(prng.integers(0, 1000)))
        ident = _patient_identity(prng, sex, age0, first)
        study_day = first
        for k in range(n_img):
            irng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, patient, k)))
            if k:
                study_day = study_day + _dt.timedelta(days=int(irng.integers(20, 400)))
            label = bool(diseased and irng.random() < _P_IMAGE_LESION_IF_DISEASED)
            marker_draw = irng.random()
            view = "PA" if irng.random() < 0.8 else "AP"
            rendered = _render(irng, image_size, lesion=label, contrast_range=site.lesion_contrast)
            density = rendered.density
            marked = (
                site.code == spec.site
                and marker_draw < (spec.p_positive if label else spec.p_negative)
                and shortcut
            )
            if marked:
                r0, r1, c0, c1 = box
                density = density.copy()
                density[r0:r1, c0:c1] = np.where(token, 1.0, density[r0:r1, c0:c1])
            stored = _to_stored(density, site, irng)
            uids = {
                "study": _uid(seed, "study", patient, k),
                "series": _uid(seed, "series", patient, k),
                "sop": _uid(seed, "sop", patient, k),
            }
            numbers = {
                "accession": f"A{int(irng.integers(10**8, 10**9))}",
                "study_id": int(irng.integers(1000, 99999)),
                "hour": irng.integers(0, 9),
                "minute": irng.integers(0, 60),
            }
            ds = _dicom_dataset(
                stored,
                site,
                ident,
                sex=sex,
                age=_age_on(ident["PatientBirthDate"], study_day),
                study_date=study_day,
                uids=uids,
                view=view,
                numbers=numbers,
                pixel_mm=pixel_mm,
            )
            name = f"img_{case:05d}"
            pydicom.dcmwrite(dicom_dir / f"{name}.dcm", ds, enforce_file_format=True)
            np.save(mask_dir / f"{name}_lesion.npy", rendered.lesion)
            np.save(mask_dir / f"{name}_lungs.npy", rendered.lungs)
            rows.append(
                {
                    "path": f"dicom/{name}.dcm",
                    "label": int(label),
                    "split": split,
                    "lesion_mask": f"masks/{name}_lesion.npy",
                    "anatomy_mask": f"masks/{name}_lungs.npy",
                    "shortcut_present": int(marked),
                }
            )
            case += 1

    gt = root / "ground_truth.csv"
    with gt.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(GROUND_TRUTH_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)

    used = spec if shortcut else None
    meta_path = root / "cohort.json"
    meta = {
        "generator": "medlens.testing.make_synthetic_cohort",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "n_patients": n_patients,
        "n_images": len(rows),
        "n_positive": sum(int(r["label"]) for r in rows),
        "image_size": image_size,
        "modality": "CR",
        "sop_class_uid": str(CRImageStorage),
        "splits": {s: sum(r["split"] == s for r in rows) for s in SPLITS},
        "modality_full_scale": _MODALITY_FULL_SCALE,
        "sites": [asdict(s) for s in SITES],
        "shortcut": None if used is None else asdict(used),
        "shortcut_images": sum(int(r["shortcut_present"]) for r in rows),
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return SyntheticCohort(
        root=root,
        dicom_dir=dicom_dir,
        ground_truth=gt,
        metadata=meta_path,
        n_patients=n_patients,
        n_images=len(rows),
        seed=seed,
        image_size=image_size,
        sites=SITES,
        shortcut=used,
    )
