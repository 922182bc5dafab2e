"""``cxrlens predict --dicom-out``: a real NIH radiograph stored as a DICOM of a patient's study comes back as a
Secondary Capture per shown overlay and a TID 1500 Structured Report, both in the source's study and referencing
its series and instance, read back with pydicom and highdicom; the identifiers go into these DICOM files only."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid
from typer.testing import CliRunner

from cxrlens.cli import app
from cxrlens.infer.dicom_out import FINDING_SCHEME
from synthetic import write_dicom

hd = pytest.importorskip("highdicom")
runner = CliRunner()

IDENTIFIERS = {"PatientName": "Doe^Jane", "PatientID": "MRN-40417", "PatientBirthDate": "19610203",
               "AccessionNumber": "ACC-88231", "StudyID": "ST-5521"}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, nih_bbox_root: Path) -> dict:
    """A real NIH radiograph (16-bit) as a CR DICOM of a study, with its identifiers; the same pixels as PNG."""
    folder = tmp_path_factory.mktemp("study")
    nih = sorted((nih_bbox_root / "images").glob("*.png"))[0]
    pixels = np.asarray(Image.open(nih).convert("L"), dtype=np.uint16) * 257
    uids = {"StudyInstanceUID": generate_uid(), "SeriesInstanceUID": generate_uid()}
    source = write_dicom(folder / "chest.dcm", pixels, BitsStored=16, HighBit=15, ViewPosition="PA",
                         PatientSex="F", StudyDate="20240102", StudyTime="101500", PatientOrientation=["A", "FL"],
                         BurnedInAnnotation="YES", **IDENTIFIERS, **uids)
    return {"dicom": source, "png": nih, "header": pydicom.dcmread(source, stop_before_pixels=True)}


def test_dicom_out_is_in_the_source_study_and_holds_the_prediction(tiny_classifier: Path, study: dict,
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", str(tiny_classifier), str(study["dicom"]), str(study["png"]), "--out",
                                 str(out), "--top", "2", "--dicom-out", "--runtime", "torch"])
    assert result.exit_code == 0, result.output
    assert f"{study['png'].name}: not a DICOM file; --dicom-out writes DICOM for DICOM inputs only" in \
        result.output.replace("\n", "")
    payload = json.loads((out / "chest.json").read_text())
    assert "dicom" not in json.loads((out / f"{study['png'].stem}.json").read_text())
    source = study["header"]
    names = payload["dicom"]
    assert sorted(names["secondary_capture"]) == sorted(payload["overlays"])
    for finding, name in names["secondary_capture"].items():  # the PNG overlay's pixels, in the source's study
        capture = pydicom.dcmread(out / name)
        assert capture.SOPClassUID == SecondaryCaptureImageStorage and capture.PhotometricInterpretation == "RGB"
        np.testing.assert_array_equal(capture.pixel_array, np.asarray(Image.open(out / payload["overlays"][finding])))
        assert capture.StudyInstanceUID == source.StudyInstanceUID
        assert capture.SeriesInstanceUID != source.SeriesInstanceUID
        assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert all(str(capture.get(key)) == value for key, value in IDENTIFIERS.items())
        assert finding in capture.ImageComments and capture.Manufacturer == "cxrlens"
        assert list(capture.PatientOrientation) == ["A", "FL"] and capture.BurnedInAnnotation == "YES"
    report = hd.sr.srread(out / names["structured_report"])
    assert report.StudyInstanceUID == source.StudyInstanceUID and str(report.PatientName) == "Doe^Jane"
    assert report.PatientID == "MRN-40417" and report.AccessionNumber == "ACC-88231"
    [evidence] = report.CurrentRequestedProcedureEvidenceSequence  # the source study, series and instance
    assert evidence.StudyInstanceUID == source.StudyInstanceUID
    [series] = evidence.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == source.SeriesInstanceUID
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    groups = report.content.get_image_measurement_groups()
    assert [group.finding_type.value for group in groups] == list(payload["probabilities"])
    for group in groups:
        finding = group.finding_type.meaning
        assert group.finding_type.scheme_designator == FINDING_SCHEME
        [probability] = group.get_measurements()
        assert probability.value == pytest.approx(payload["probabilities"][finding], abs=1e-6)
        [call] = group.get_qualitative_evaluations()
        assert call.value.meaning == ("Present" if finding in payload["positive_findings"] else "Absent")
        assert group.source_images[0].referenced_sop_instance_uid == source.SOPInstanceUID
    regions = report.content.get_planar_roi_measurement_groups()
    expected = [(finding, box) for finding in payload["overlays"] for box in payload["boxes"][finding]]
    assert len(regions) == len(expected) > 0
    for region, (finding, box) in zip(regions, expected):  # boxes as closed polylines in the source's pixels
        assert region.finding_type.meaning == finding
        corners = np.array([[box["x"], box["y"]], [box["x"] + box["w"], box["y"] + box["h"]]])
        np.testing.assert_allclose(region.roi.value[[0, 2]], corners, atol=1e-3)
        assert region.roi.value.tolist()[0] == region.roi.value.tolist()[-1]
    # identifiers go into the DICOM files only: not the JSON, PNG, CSV or console
    secrets = [*IDENTIFIERS.values(), source.StudyInstanceUID, source.SeriesInstanceUID, source.SOPInstanceUID]
    for path in out.iterdir():
        if path.suffix != ".dcm":
            data = path.read_bytes()
            assert not any(secret.encode() in data for secret in secrets), path.name
    assert not any(secret in result.output for secret in secrets)


def test_dicom_out_overwrite_and_sources_with_missing_or_malformed_attributes(
        tiny_classifier: Path, study: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """--overwrite replaces the DICOM files with new instances, and without --dicom-out removes them; a source with
    no patient or study attributes, or malformed ones, gets them empty; a missing, malformed or multi-valued UID
    gets one line naming the keyword; no value of the header reaches the console, a warning or a log record; a
    Latin-1 name is written as UTF-8."""
    out = tmp_path / "out"
    arguments = ["predict", str(tiny_classifier), str(study["dicom"]), "--out", str(out), "--top", "1",
                 "--runtime", "torch"]
    assert runner.invoke(app, [*arguments, "--dicom-out"]).exit_code == 0
    first = json.loads((out / "chest.json").read_text())["dicom"]
    earlier = pydicom.dcmread(out / first["structured_report"]).SOPInstanceUID
    assert runner.invoke(app, [*arguments, "--dicom-out", "--finding", "Hernia", "--overwrite"]).exit_code == 0
    again = json.loads((out / "chest.json").read_text())["dicom"]
    assert list(again["secondary_capture"]) == ["Hernia"]
    assert sorted(path.name for path in out.glob("*.dcm")) == sorted([*again["secondary_capture"].values(),
                                                                      again["structured_report"]])
    assert pydicom.dcmread(out / again["structured_report"]).SOPInstanceUID != earlier
    assert runner.invoke(app, [*arguments, "--overwrite"]).exit_code == 0
    assert not list(out.glob("*.dcm"))

    pixels = np.asarray(Image.open(study["png"]).convert("L"), dtype=np.uint16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns of the malformed values it is asked to write
        bare = write_dicom(tmp_path / "bare.dcm", pixels, StudyInstanceUID=generate_uid(),
                           SeriesInstanceUID=generate_uid(), PatientBirthDate="1961-02-03", PatientSex="Female")
        dataset = pydicom.dcmread(bare)
        del dataset.PatientID  # write_dicom's default: this source has no patient attributes
        dataset.save_as(bare)
        malformed = write_dicom(tmp_path / "malformed.dcm", pixels, StudyInstanceUID="1.2.3.MRN12345")
        twice = write_dicom(tmp_path / "twice.dcm", pixels, StudyInstanceUID=["1.2.3.4", "1.2.3.5"],
                            SeriesInstanceUID=generate_uid())
        latin = write_dicom(tmp_path / "latin.dcm", pixels, SpecificCharacterSet="ISO_IR 100",
                            PatientName="M\u00fcller^J\u00fcrgen", StudyInstanceUID=generate_uid(),
                            SeriesInstanceUID=generate_uid())
    caplog.set_level(logging.DEBUG)
    caplog.clear()  # pydicom logged the malformed values it was asked to write above
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(app, ["predict", str(tiny_classifier), str(bare), str(malformed), str(twice),
                                     str(latin), "--out", str(tmp_path / "o2"), "--dicom-out", "--runtime", "torch"])
    assert result.exit_code == 2
    output = result.output.replace("\n", "")
    assert (f"error: {malformed}: DICOM StudyInstanceUID, SeriesInstanceUID missing or not a valid UID; cannot "
            "reference its study in --dicom-out") in output and "2 without their DICOM out" in output
    assert f"error: {twice}: DICOM StudyInstanceUID missing or not a valid UID" in output
    said = [output, *(str(warning.message) for warning in caught), *(record.getMessage() for record in caplog.records)]
    assert not [(value, text) for value in ("MRN12345", "1961-02-03", "Female", "1.2.3.4") for text in said
                if value in text]
    report = pydicom.dcmread(tmp_path / "o2" / json.loads((tmp_path / "o2" / "bare.json").read_text())["dicom"][
        "structured_report"])
    assert (report.PatientName, report.PatientID, report.PatientBirthDate, report.PatientSex) == ("", "", "", "")
    assert (tmp_path / "o2" / "malformed.json").exists()
    assert not list((tmp_path / "o2").glob("malformed*.dcm")) and not list((tmp_path / "o2").glob("twice*.dcm"))
    latin_report = pydicom.dcmread(tmp_path / "o2" / "latin-sr.dcm")
    assert (latin_report.SpecificCharacterSet, str(latin_report.PatientName)) == ("ISO_IR 192", "M\u00fcller^J\u00fcrgen")
