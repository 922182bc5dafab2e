"""Binary downstream tasks carved out of a multi-label dataset (papers 001 and 002).

:func:`binary_task` keeps the images labelled with ``positive`` and, as controls, images
whose every known label is negative ("No Finding" in NIH's terms); patients with a
positive image give no controls. With ``matched`` (paper 002: 1,353 pneumonia images and as
many healthy ones), as many controls as positives are drawn, one image per healthy
patient; otherwise (paper 001) every control image is kept. Official split lists travel
with the items, so the task keeps the dataset's patient-level test list.
"""

from __future__ import annotations

import numpy as np

from cxrlens.config import TaskConfig
from cxrlens.data.labels import canonical
from cxrlens.data.records import CXRDataset, CXRItem


def binary_task(dataset: CXRDataset, task: TaskConfig) -> CXRDataset:
    """``dataset`` as the one-class task ``task.positive`` vs images without any finding."""
    names = [canonical(name) for name in dataset.classes]
    if canonical(task.positive) not in names:
        raise ValueError(f"{dataset.name}: no class {task.positive!r} to make a task of "
                         f"(classes: {', '.join(dataset.classes)})")
    column = names.index(canonical(task.positive))
    findings = [c for c, name in enumerate(dataset.classes) if name != "No Finding"]
    positives = [item for item in dataset.items if item.label_mask[column] and item.labels[column] == 1]
    sick = {item.patient for item in positives}
    controls = [item for item in dataset.items if item.patient not in sick and item.label_mask[findings].all()
                and not item.labels[findings].any()]
    if task.matched:
        first = {}
        for item in controls:
            first.setdefault(item.patient, item)
        patients = sorted(first)
        chosen = np.random.default_rng(task.seed).permutation(len(patients))[:len(positives)]
        controls = [first[patients[p]] for p in sorted(chosen)]
    if not positives or not controls:
        raise ValueError(f"{dataset.name}: {len(positives)} {task.positive} images and {len(controls)} controls; "
                         "a task needs both")
    items = [CXRItem(path=item.path, patient_id=item.patient_id, labels=np.array([float(label)], np.float32),
                     label_mask=np.ones(1, dtype=bool), view=item.view, split=item.split,
                     boxes=tuple(box for box in item.boxes if canonical(box.finding) == canonical(task.positive)),
                     meta=item.meta) for label, group in ((1, positives), (0, controls)) for item in group]
    return CXRDataset((task.positive,), items, dataset.problems, f"{dataset.name}-{task.positive}-task",
                      log_problems=False, roots=dataset.roots)
