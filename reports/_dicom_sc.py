"""Write explanation overlays as DICOM Secondary Capture images that a PACS files beside the scan.

Identity: what a PACS needs and the "no identifiers in outputs" rule
--------------------------------------------------------------------
A PACS files an object by its patient identity (PatientID, PatientName) and study
(StudyInstanceUID); an object whose patient does not match the study's is quarantined or
rejected. medlens never copies identifiers unless asked, so there are two modes:

* ``include_identifiers=True`` (for sending back to the clinical PACS; the user asked for
  it explicitly, e.g. ``--include-identifiers``): the object joins the source *study* (same
  StudyInstanceUID), opens a new *series* and references the source image
  (SourceImageSequence and ReferencedImageSequence), so a viewer shows the overlay next to
  the original. The Patient module and the identifying General Study attributes (accession
  number, referring physician, study date/time and id) are copied verbatim from the
  source; type 2 ones the source lacks are written empty.
* ``include_identifiers=False`` (default): a de-identified object in the sense of PS3.15
  Annex E, Basic Application Level Confidentiality Profile (113100) with no retention
  options. PatientName and PatientID are the pseudonymous case key; birth date, sex,
  accession number, referring physician, study id, study date and time are written empty
  (type 2) or left out. **No UID of the source is kept**: the study, series and SOP
  instance UIDs are new, derived deterministically (``2.25.`` + a name-based UUID) from
  a salted SHA-256 of the case key, so reruns are byte-identical and every overlay of one
  case lands in one pseudonymous study; the source image is referenced only by such a
  remapped UID (the original cannot be recovered from it, but whoever holds the source and
  the salt can re-derive it). The salt defaults to the
  source's StudyInstanceUID (not contained in the object); pass ``uid_salt`` (a project
  secret) so that even holders of the source cannot link the object. The dates left in
  the object (content, instance creation, secondary capture) are those of the overlay's
  creation (``created``), not of the source. PatientIdentityRemoved = YES,
  DeidentificationMethodCodeSequence = (113100, DCM) with the Clean Descriptors Option
  (113105: the descriptors kept are medlens' own text) and DeidentificationMethod spell out
  what was done.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medlens._errors import InputDataError, param_error

from ._atomic import atomic_output
from ._bundle import utc_timestamp

__all__ = [
    "DEIDENTIFICATION_METHOD",
    "DEIDENTIFICATION_METHOD_CODES",
    "IDENTIFYING_PATIENT_KEYWORDS",
    "IDENTIFYING_STUDY_KEYWORDS",
    "SourceReference",
    "write_secondary_capture",
]

#: Patient module (and Patient Study) attributes copied only with include_identifiers=True
IDENTIFYING_PATIENT_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "TypeOfPatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientComments",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "EthnicGroup",
)
#: General Study attributes that identify the patient or the visit
IDENTIFYING_STUDY_KEYWORDS = (
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "ReferringPhysicianName",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
)
#: De-identification Method (LO, so several values of at most 64 characters)
DEIDENTIFICATION_METHOD = (
    "PS3.15 Basic Application Level Confidentiality Profile",
    "patient name and ID replaced by the pseudonymous case key",
    "birth date, sex, accession number removed",
    "referring physician, study id, date, time removed",
    "study, series, SOP and referenced UIDs replaced (salted hash)",
    "remaining dates are the overlay's creation, not the source's",
)
#: CID 7050 "De-identification Method" codes: (value, scheme, meaning). The descriptors the
#: object keeps (series and derivation description, contribution description) are written by
#: medlens from the method and model names, never copied from the source: clean by
#: construction, hence the Clean Descriptors Option.
DEIDENTIFICATION_METHOD_CODES = (
    ("113100", "DCM", "Basic Application Level Confidentiality Profile"),
    ("113105", "DCM", "Clean Descriptors Option"),
)
#: Type 2 General Study attributes written empty when there is no value to write
_TYPE2_STUDY_KEYWORDS = (
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyID",
    "StudyDate",
    "StudyTime",
)
#: Paired body parts (CID 4031 values with a left and a right) that need a Laterality value
_PAIRED_BODY_PARTS = frozenset(
    {
        "BREAST",
        "EAR",
        "EYE",
        "KIDNEY",
        "LUNG",
        "OVARY",
        "TESTIS",
        "ADRENAL",
        "CLAVICLE",
        "SHOULDER",
        "ARM",
        "ELBOW",
        "FOREARM",
        "WRIST",
        "HAND",
        "FINGER",
        "THUMB",
        "HIP",
        "THIGH",
        "KNEE",
        "LEG",
        "ANKLE",
        "FOOT",
        "TOE",
        "FEMUR",
        "TIBIA",
        "FIBULA",
        "HUMERUS",
        "RADIUS",
        "ULNA",
        "PATELLA",
        "SCAPULA",
        "CALCANEUS",
        "EXTREMITY",
        "UPREXM",
        "LOWREXM",
    }
)
#: CID 7202 "Source Image Purposes of Reference"
_PURPOSE_SOURCE_FOR_PROCESSING = ("121322", "DCM", "Source image for image processing operation")

BAD_IMAGE = (
    "expected an RGB image of shape (H, W, 3) and dtype uint8; got shape {shape} and dtype {dtype}"
)
MISSING_REFERENCE = "the source has no {keyword}; medlens needs it to reference the source image"
PSEUDONYM_LEAK = (
    "the pseudonym equals the source's {keyword}; choose a pseudonymous key that is not a "
    "patient identifier"
)
BAD_PSEUDONYM = (
    "the pseudonym must be 1-64 characters of A-Z, a-z, 0-9, '-', '_' or '.'; got {got!r}"
)
_PSEUDONYM_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
NO_PSEUDONYM = "a de-identified object needs a pseudonym (the case key); pass pseudonym='case-0001'"


@dataclass(frozen=True)
class SourceReference:
    """What a Secondary Capture needs from its source image.

    Attributes
    ----------
    study_instance_uid, series_instance_uid, sop_instance_uid, sop_class_uid : str
        The source image's UIDs.
    patient : mapping of str to object
        Patient module attributes by keyword (copied only with ``include_identifiers``).
    study : mapping of str to object
        Identifying General Study attributes by keyword (same rule).
    patient_orientation : tuple of str, optional
        The source's PatientOrientation (row, column directions), when known.
    laterality : str, optional
        The source's Laterality or ImageLaterality ("L", "R"), when known.
    specific_character_set : str or tuple of str, optional
        The source's SpecificCharacterSet, copied with the identity it applies to.
    body_part_examined : str, optional
        The source's BodyPartExamined (e.g. "CHEST"); with it, an unknown laterality of an
        unpaired body part is written as absent rather than empty.
    """

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    patient: Mapping[str, Any] = field(default_factory=dict, repr=False)
    study: Mapping[str, Any] = field(default_factory=dict, repr=False)
    patient_orientation: tuple[str, ...] | None = None
    laterality: str | None = None
    specific_character_set: str | tuple[str, ...] | None = None
    body_part_examined: str | None = None

    def __post_init__(self) -> None:
        for name in (
            "study_instance_uid",
            "series_instance_uid",
            "sop_instance_uid",
            "sop_class_uid",
        ):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise param_error(name, "SourceReference", "a non-empty UID string", value)

    @classmethod
    def from_dataset(cls, ds: Any) -> SourceReference:
        """Take the references (and the identity, kept in memory only) from a pydicom Dataset."""
        from pydicom import Dataset

        if not isinstance(ds, Dataset):
            raise param_error(
                "ds", "SourceReference.from_dataset", "a pydicom Dataset", type(ds).__name__
            )
        uids = {}
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
            value = ds.get(keyword)
            if not value:
                raise InputDataError(
                    MISSING_REFERENCE.format(keyword=keyword), source=getattr(ds, "filename", None)
                )
            uids[keyword] = str(value)
        orientation = ds.get("PatientOrientation")
        orientation_t = (
            tuple(str(v) for v in orientation) if orientation and len(orientation) == 2 else None
        )
        return cls(
            study_instance_uid=uids["StudyInstanceUID"],
            series_instance_uid=uids["SeriesInstanceUID"],
            sop_instance_uid=uids["SOPInstanceUID"],
            sop_class_uid=uids["SOPClassUID"],
            patient={k: ds[k].value for k in IDENTIFYING_PATIENT_KEYWORDS if k in ds},
            study={k: ds[k].value for k in IDENTIFYING_STUDY_KEYWORDS if k in ds},
            patient_orientation=orientation_t,
            laterality=_laterality(ds),
            specific_character_set=_charset(ds),
            body_part_examined=str(ds.get("BodyPartExamined") or "").strip() or None,
        )


def _charset(ds: Any) -> str | tuple[str, ...] | None:
    value = ds.get("SpecificCharacterSet")
    if not value:
        return None
    return str(value) if isinstance(value, str) else tuple(str(v) for v in value)


def _laterality(ds: Any) -> str | None:
    """Laterality of a paired body part ("L" or "R") from the source, else None."""
    for keyword in ("Laterality", "ImageLaterality"):
        value = str(ds.get(keyword) or "").strip().upper()
        if value in ("L", "R"):
            return value
    return None


_UID_NAMESPACE = uuid.UUID("6d1f3a2e-5b7c-5e0a-9c8d-6d65646c656e")  # fixed medlens namespace


def _uid(*parts: str) -> str:
    """A deterministic UID: ``2.25.`` + a name-based UUID (RFC 4122 v5) of the parts.

    (pydicom's ``generate_uid(prefix=None, entropy_srcs=...)`` ignores the entropy and
    returns a random UUID, so it cannot serve for byte-identical reruns.)
    """
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, chr(31).join(str(p) for p in parts)).int}"


def _pseudo_uid(salt: str, pseudonym: str, kind: str, original: str = "") -> str:
    """A pseudonymous UID: from a salted SHA-256 of the case key (and the original UID)."""
    digest = hashlib.sha256(chr(31).join((salt, pseudonym, original)).encode()).hexdigest()
    return _uid("medlens-sc-deid", kind, digest)


def write_secondary_capture(
    path: str | os.PathLike[str],
    rgb_image: np.ndarray,
    *,
    source: SourceReference | Any,
    series_description: str,
    pseudonym: str | None = None,
    include_identifiers: bool = False,
    series_number: int = 900,
    instance_number: int = 1,
    series_key: str = "",
    derivation_description: str | None = None,
    created: _dt.datetime | int | float | None = None,
    uid_salt: str = "",
) -> Path:
    """Write an RGB overlay as a DICOM Secondary Capture (new series; study per identity mode).

    Parameters
    ----------
    path : str or os.PathLike
        Output file (written atomically). Do not put patient identifiers in file names.
    rgb_image : ndarray of shape (H, W, 3), dtype uint8
        The rendered overlay.
    source : SourceReference or pydicom.Dataset
        The source image (its UIDs; its patient and study identity are used only with
        ``include_identifiers=True``).
    series_description : str
        Shown in the PACS series list, e.g. ``"medlens Grad-CAM overlay"`` (max 64 chars).
    pseudonym : str, optional
        Pseudonymous case key written as PatientName and PatientID in the de-identified
        object. Required when ``include_identifiers`` is False.
    include_identifiers : bool, default False
        Copy the source's patient module and identifying study attributes and keep the
        source's study and references (for filing back into the clinical PACS). Without
        it, the object gets a pseudonymous identity and new UIDs. See the module docstring.
    series_number, instance_number : int
    series_key : str
        Distinguishes series with the same description in the same study (e.g. a run id).
        The series UID is derived from study UID + description + key, so all overlays of one
        run and method land in one series; the SOP UID adds the source image and pixels.
    derivation_description : str, optional
        Free text (max 1024 chars), e.g. ``"Grad-CAM of model X, class 'pneumothorax'"``.
    created : datetime or POSIX seconds, optional
        Content/creation date and time; default ``SOURCE_DATE_EPOCH`` or now (UTC). Fix it
        for byte-identical output.
    uid_salt : str, default ""
        Secret mixed into the pseudonymous UIDs of a de-identified object (ignored with
        ``include_identifiers``). Empty: the source's StudyInstanceUID is the salt.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    InputDataError
        If the image is not (H, W, 3) uint8, a source UID is missing, or the pseudonym
        equals a source identifier.
    MedlensError
        For bad parameters.
    """
    import highdicom as hd
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.valuerep import DA, TM

    from medlens import __version__

    arr = np.asarray(rgb_image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8 or min(arr.shape[:2]) < 1:
        raise InputDataError(BAD_IMAGE.format(shape=arr.shape, dtype=arr.dtype), source="rgb_image")
    if (
        not isinstance(series_description, str)
        or not series_description.strip()
        or len(series_description) > 64
    ):
        raise param_error(
            "series_description",
            "write_secondary_capture",
            "a non-empty str of at most 64 characters",
            series_description,
        )
    if not isinstance(include_identifiers, bool):
        raise param_error(
            "include_identifiers", "write_secondary_capture", "a bool", include_identifiers
        )
    for name, value in (("series_number", series_number), ("instance_number", instance_number)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**31 - 1:
            raise param_error(name, "write_secondary_capture", "an int >= 1", value)
    if not isinstance(uid_salt, str):
        raise param_error("uid_salt", "write_secondary_capture", "a str", uid_salt)
    ref = source if isinstance(source, SourceReference) else SourceReference.from_dataset(source)
    if not include_identifiers:
        if not isinstance(pseudonym, str) or not pseudonym.strip() or len(pseudonym) > 64:
            raise InputDataError(NO_PSEUDONYM, source="pseudonym")
        if not _PSEUDONYM_RE.fullmatch(pseudonym):
            raise InputDataError(BAD_PSEUDONYM.format(got=pseudonym), source="pseudonym")
        for keyword in ("PatientID", "PatientName", "AccessionNumber"):
            value = ref.patient.get(keyword, ref.study.get(keyword))
            if (
                value is not None
                and str(value).strip()
                and str(value).strip().lower() == pseudonym.strip().lower()
            ):
                raise InputDataError(PSEUDONYM_LEAK.format(keyword=keyword), source="pseudonym")

    arr = np.ascontiguousarray(arr)
    pixel_hash = hashlib.sha256(arr.tobytes() + repr(arr.shape).encode()).hexdigest()
    if include_identifiers:
        study_uid = ref.study_instance_uid
        referenced_sop_uid = ref.sop_instance_uid
    else:
        salt, key = uid_salt or ref.study_instance_uid, str(pseudonym)  # validated above
        study_uid = _pseudo_uid(salt, key, "study")
        referenced_sop_uid = _pseudo_uid(salt, key, "source-sop", ref.sop_instance_uid)
    series_uid = _uid("medlens-sc-series", study_uid, series_description, series_key)
    sop_uid = _uid(
        "medlens-sc-instance", series_uid, referenced_sop_uid, pixel_hash, str(instance_number)
    )
    stamp = _dt.datetime.strptime(utc_timestamp(created), "%Y-%m-%dT%H:%M:%SZ")
    date, time = DA(stamp.date()), TM(stamp.time())

    orientation = ref.patient_orientation or ("L", "F")  # replaced below when unknown
    sc = hd.sc.SCImage(
        pixel_array=arr,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        patient_orientation=orientation,
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=instance_number,
        manufacturer="medlens",
        manufacturer_model_name="medlens",
        software_versions=str(__version__),
        series_description=series_description,
        content_date=date,
        content_time=time,
        series_date=date,
        series_time=time,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )
    if ref.patient_orientation is None:
        sc.PatientOrientation = ""  # type 2C: unknown for this image
    sc.InstanceCreationDate = date
    sc.InstanceCreationTime = time
    sc.DateOfSecondaryCapture = date
    sc.TimeOfSecondaryCapture = time
    sc.BurnedInAnnotation = "NO"
    # Laterality is type 2C (General Series): a value for a paired body part, absent for an
    # unpaired one, empty only when actually unknown (no laterality and no body part known)
    if ref.body_part_examined:
        sc.BodyPartExamined = ref.body_part_examined
    if ref.laterality:
        sc.Laterality = ref.laterality
    elif not ref.body_part_examined or ref.body_part_examined.upper() in _PAIRED_BODY_PARTS:
        sc.Laterality = ""
    for item in sc.get("ContributingEquipmentSequence", []):
        item.ContributionDateTime = stamp.strftime("%Y%m%d%H%M%S")  # highdicom writes now()

    if include_identifiers:
        if ref.specific_character_set:  # names may need it (e.g. ISO_IR 192 for UTF-8)
            sc.SpecificCharacterSet = ref.specific_character_set
        for keyword, value in {**ref.patient, **ref.study}.items():
            setattr(sc, keyword, value)
        for keyword in (
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "PatientSex",
            *_TYPE2_STUDY_KEYWORDS,
        ):
            if keyword not in sc:
                setattr(sc, keyword, "")
    else:
        for keyword in (*IDENTIFYING_PATIENT_KEYWORDS, *IDENTIFYING_STUDY_KEYWORDS):
            if keyword in sc:
                del sc[keyword]
        # family name component: the caret keeps it in the current PN form (no dciodvfy
        # "Retired Person Name form" warning); it reads back as family name = the key
        sc.PatientName = f"{pseudonym}^"
        sc.PatientID = pseudonym
        sc.PatientBirthDate = ""
        sc.PatientSex = ""
        for keyword in _TYPE2_STUDY_KEYWORDS:
            setattr(sc, keyword, "")
        sc.PatientIdentityRemoved = "YES"
        sc.DeidentificationMethod = list(DEIDENTIFICATION_METHOD)
        codes = []
        for value, scheme, meaning in DEIDENTIFICATION_METHOD_CODES:
            code = Dataset()
            code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
            codes.append(code)
        sc.DeidentificationMethodCodeSequence = DicomSequence(codes)
        sc.LongitudinalTemporalInformationModified = "REMOVED"

    def _image_ref(purpose: bool) -> Dataset:
        item = Dataset()
        item.ReferencedSOPClassUID = ref.sop_class_uid
        item.ReferencedSOPInstanceUID = referenced_sop_uid
        if purpose:
            code = Dataset()
            code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = (
                _PURPOSE_SOURCE_FOR_PROCESSING
            )
            item.PurposeOfReferenceCodeSequence = DicomSequence([code])
        return item

    sc.SourceImageSequence = DicomSequence([_image_ref(True)])
    sc.ReferencedImageSequence = DicomSequence([_image_ref(False)])
    sc.DerivationDescription = (
        derivation_description or f"medlens explanation overlay: {series_description}"
    )[:1024]

    target = Path(path)
    with atomic_output(target) as tmp:
        sc.save_as(tmp, enforce_file_format=True)
    return target
