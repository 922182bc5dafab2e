"""DICOM out for PACS: a prediction of a DICOM radiograph written back as DICOM objects of the source's study.

For each DICOM input, ``cxrlens predict --dicom-out`` writes (with highdicom, the ``[dicom-out]`` extra):

* a **Secondary Capture** image (RGB) per shown finding: the radiograph under the finding's heatmap with its
  predicted boxes, as in the PNG overlay, its Source Image Sequence naming the radiograph, its Patient
  Orientation and Burned In Annotation the source's (empty or absent where the source has none); one new series
  (number 9901) per input;
* a **Comprehensive 3D SR** holding a TID 1500 Measurement Report (series 9902): per finding, the model's
  probability (DCM 122157 "Probability", unit UCUM ``1``) and its call at the checkpoint's operating threshold
  (SCT Present / Absent), image-level; and per predicted box of the shown findings, a planar region (a closed
  POLYLINE in the source image's pixel coordinates, clipped to the image) with the same probability. Findings
  are coded in the local scheme ``99CXRLENS`` (code value = the model's class name, declared in the Coding
  Scheme Identification Sequence); the observer is the device ``cxrlens`` (a UID derived from the weights, so
  one model is one device), and the algorithm is named with the CAM method and cxrlens's version.

Both reference the source: the study (same Study Instance UID, patient and study attributes copied from the
source header), the series and the instance (SR evidence, SC source images). Only what these objects need is
copied from the source (:func:`source_header`), and each copied value is checked against its VR first: a
missing, malformed or multi-valued type-2 value (a birth date ``1961-02-03``, a sex ``Female``) is written empty, a
missing or malformed UID refuses the file, and no message names a value (pydicom's and highdicom's warnings and
log records are dropped while the header is read and the objects written). Text is written as UTF-8 (ISO_IR 192)
whatever the source's character set: pydicom has already decoded it. Patient and study identifiers therefore go only
into these DICOM files: the JSON, PNG, CSV and console output of ``predict`` never carry them (the file *names*
are the user's: an input named after a patient names its outputs). Each run writes new SOP instances (new UIDs);
the file names carry only the image's stem.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from cxrlens import __version__
from cxrlens.data.io import printable, read_dicom_header
from cxrlens.infer.outputs import slug
from cxrlens.infer.predictor import Prediction

FINDING_SCHEME = "99CXRLENS"
MANUFACTURER = "cxrlens"
SC_SERIES_NUMBER, SR_SERIES_NUMBER = 9901, 9902
SC_SUFFIX, SR_SUFFIX = "-sc-{finding}.dcm", "-sr.dcm"
UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
"""Required, and valid: a derived object cannot reference its source without them."""
PATIENT_AND_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                     "ReferringPhysicianName", "StudyID", "AccessionNumber", "Modality")
"""Copied, or empty when the source's is missing or malformed (type 2 in the derived objects; highdicom reads
the source's Modality)."""
KEPT_WHEN_VALID = ("PatientOrientation", "BurnedInAnnotation", "Rows", "Columns")
UTF8 = "ISO_IR 192"  # the copied values are decoded text: written as UTF-8 whatever the source's character set
SEXES = ("M", "F", "O")
UNSAFE_NAME = re.compile(r"[\\\x00-\x1f]")
PLACEHOLDER_ORIENTATION = ("L", "F")  # highdicom wants one; replaced by the source's (or empty) before writing


class DicomOutError(ValueError):
    """A source or model that DICOM out cannot write for; the message names no header value."""


def source_header(path: str | Path):  # noqa: ANN201 - pydicom Dataset
    """The attributes of the source radiograph that its derived objects copy or reference, in a new dataset
    (see the module docstring); :class:`DicomOutError` naming the file and the keyword, never the value, for a
    missing or malformed UID."""
    from pydicom import Dataset, config

    with quiet_dicom(), config.disable_value_validation():  # checked by _valid, without quoting a value
        header = read_dicom_header(path)
    referenced = Dataset()
    referenced.SpecificCharacterSet = UTF8
    bad = [keyword for keyword in UIDS if not _valid(keyword, header.get(keyword), single=True)]
    if bad:
        raise DicomOutError(f"{printable(str(path))}: DICOM {', '.join(bad)} missing or not a valid UID; cannot "
                            "reference its study in --dicom-out")
    for keyword in UIDS:
        setattr(referenced, keyword, str(header.get(keyword)))
    for keyword in PATIENT_AND_STUDY:
        value = header.get(keyword)
        valid = _valid(keyword, value, single=True) and (keyword != "PatientSex" or str(value) in SEXES)
        setattr(referenced, keyword, value if valid else "")
    for keyword in KEPT_WHEN_VALID:
        if _valid(keyword, header.get(keyword)):
            setattr(referenced, keyword, header.get(keyword))
    return referenced


def write_dicom_out(prediction: Prediction, header, folder: Path, stem: str,  # noqa: ANN001 - pydicom Dataset
                    findings: Sequence[str], cam: str, checkpoint: str, fingerprint: str,
                    max_side: int = 1024) -> dict:
    """Write ``stem-sc-FINDING.dcm`` for each of ``findings`` and ``stem-sr.dcm`` into ``folder`` (``header`` from
    :func:`source_header`, ``fingerprint`` the model weights'); returns the file names
    (``{"secondary_capture": {finding: name}, "structured_report": name}``), which carry no identifiers.

    Every object is built before any is written, and a failed write removes what it wrote. pydicom's and
    highdicom's warnings and log records are dropped meanwhile: they quote values of the header (:func:`quiet_dicom`).
    """
    unsafe = [name for name in prediction.probabilities if UNSAFE_NAME.search(name)]
    if unsafe:
        raise DicomOutError(f"finding name {unsafe[0]!r} cannot be a DICOM code (a backslash or control character)")
    import highdicom as hd

    captures = {finding: f"{stem}{SC_SUFFIX.format(finding=slug(finding))}" for finding in findings}
    report_name = f"{stem}{SR_SUFFIX}"
    with quiet_dicom():
        series = hd.UID()  # one series of captures per input
        datasets = {name: _secondary_capture(prediction, header, finding, series, number, cam, max_side)
                    for number, (finding, name) in enumerate(captures.items(), start=1)}
        datasets[report_name] = _structured_report(prediction, header, findings, cam, checkpoint, fingerprint)
        written: list[Path] = []
        try:
            for name, dataset in datasets.items():
                written.append(folder / name)
                dataset.save_as(folder / name, enforce_file_format=True)
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
    return {"secondary_capture": captures, "structured_report": report_name}


def _secondary_capture(prediction: Prediction, header, finding: str, series: str,  # noqa: ANN001, ANN202
                       number: int, cam: str, max_side: int):
    import highdicom as hd
    from pydicom import Dataset

    capture = hd.sc.SCImage.from_ref_dataset(
        header, prediction.overlay(finding, max_side), photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", patient_orientation=PLACEHOLDER_ORIENTATION, series_instance_uid=series,
        series_number=SC_SERIES_NUMBER, sop_instance_uid=hd.UID(), instance_number=number,
        manufacturer=MANUFACTURER)
    capture.PatientOrientation = header.get("PatientOrientation", "")  # the same picture, resized: the source's
    if "BurnedInAnnotation" in header:
        capture.BurnedInAnnotation = header.BurnedInAnnotation
    capture.SeriesDescription = f"cxrlens {cam} heatmaps"
    capture.ImageComments = (f"{finding}: probability {prediction.probabilities[finding]:.3f} "
                             f"(operating threshold {prediction.thresholds[finding]:.3f}); {cam} heatmap, "
                             "predicted boxes in green. Research use, not for diagnosis.")
    reference = Dataset()
    reference.ReferencedSOPClassUID = header.SOPClassUID
    reference.ReferencedSOPInstanceUID = header.SOPInstanceUID
    capture.SourceImageSequence = [reference]
    return capture


def _structured_report(prediction: Prediction, header, findings: Sequence[str], cam: str,  # noqa: ANN001, ANN202
                       checkpoint: str, fingerprint: str):
    import highdicom as hd
    from pydicom import Dataset
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    algorithm = hd.sr.AlgorithmIdentification(name=f"cxrlens {cam}", version=__version__)
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=["cxrlens device", fingerprint]), name="cxrlens",
            model_name=Path(checkpoint).name[:64]))
    source = hd.sr.SourceImageForMeasurementGroup.from_source_image(header)
    groups: list = []
    for number, finding in enumerate(prediction.probabilities, start=1):
        code = _finding_code(finding)
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"finding {number}: {finding}"[:64]),
            finding_type=code, algorithm_id=algorithm, source_images=[source],
            measurements=[_probability(prediction, finding, algorithm)],
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(
                code, codes.SCT.Present if prediction.positive(finding) else codes.SCT.Absent)]))
    region_source = hd.sr.SourceImageForRegion.from_source_image(header)
    for finding in findings:
        outlines = [_closed_polyline(box.as_xyxy(), prediction.width, prediction.height)
                    for box in prediction.boxes_in_source(finding)]
        for number, outline in enumerate((outline for outline in outlines if outline is not None), start=1):
            groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{finding} box {number}"[:64]),
                referenced_region=hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                                                    graphic_data=outline, source_image=region_source),
                finding_type=_finding_code(finding), algorithm_id=algorithm,
                measurements=[_probability(prediction, finding, algorithm)]))
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.SCT.ChestImaging, imaging_measurements=groups)
    report = hd.sr.Comprehensive3DSR(
        evidence=[header], content=content, series_instance_uid=hd.UID(), series_number=SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER, is_complete=True)
    report.SeriesDescription = f"cxrlens {cam} findings"
    scheme = Dataset()
    scheme.CodingSchemeDesignator = FINDING_SCHEME
    scheme.CodingSchemeName = "cxrlens model class names"
    scheme.CodingSchemeResponsibleOrganization = "cxrlens"
    report.CodingSchemeIdentificationSequence = [scheme]
    return report


def _finding_code(finding: str):  # noqa: ANN202 - highdicom CodedConcept
    """The model's class name as a code of the local scheme (a long name goes whole into Long Code Value)."""
    import highdicom as hd

    return hd.sr.CodedConcept(value=finding, scheme_designator=FINDING_SCHEME, meaning=finding[:64])


def _probability(prediction: Prediction, finding: str, algorithm):  # noqa: ANN001, ANN202
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.sr.Measurement(name=codes.DCM.Probability, value=round(prediction.probabilities[finding], 6),
                             unit=codes.UCUM.NoUnits, algorithm_id=algorithm)


def _closed_polyline(xyxy: tuple[float, float, float, float], width: int, height: int) -> np.ndarray | None:
    """A box as the closed polyline SR SCOORD wants: (column, row) corners, the first repeated last, clipped to the
    image (0 to ``width`` / ``height``: pixel edges, the top-left pixel's top-left corner at 0, 0); None when
    nothing of it is in the image (a box in a ``pad`` fit's padding)."""
    x0, x1 = np.clip([xyxy[0], xyxy[2]], 0, width)
    y0, y1 = np.clip([xyxy[1], xyxy[3]], 0, height)
    if x1 <= x0 or y1 <= y0:
        return None
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float32)


@contextmanager
def quiet_dicom() -> Iterator[None]:
    """Drop pydicom's and highdicom's warnings and log records (they quote header values and UIDs)."""
    loggers = [logging.getLogger(name) for name in ("pydicom", "highdicom")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings(record=True):
        for logger in loggers:
            logger.setLevel(logging.CRITICAL + 1)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def _valid(keyword: str, value: object, single: bool = False) -> bool:
    """Whether ``value`` is present and valid for the VR of ``keyword`` (each value of a multi-valued one; with
    ``single``, only one value is valid)."""
    from pydicom import config
    from pydicom.datadict import dictionary_VR
    from pydicom.multival import MultiValue
    from pydicom.valuerep import validate_value

    if value is None or str(value).strip() == "":
        return False
    several = isinstance(value, (MultiValue, list, tuple))
    if several and single:
        return False
    values = list(value) if several else [value]
    try:
        for item in values:
            validate_value(dictionary_VR(keyword), item, config.RAISE)
    except (ValueError, TypeError):
        return False
    return True
