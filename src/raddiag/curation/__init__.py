"""raddiag.curation: from case records (a crawler's or an export's output) to an
RP3D-DiagDS-format dataset (paper Section 4.1).

Steps, each resumable and each writing its output and a log under one WORK folder:
:func:`~raddiag.curation.filter.run_filter` (article titles -> disorders, by two LLM prompts
or by rules), :func:`~raddiag.curation.filter.apply_review` (a person's decisions),
:func:`~raddiag.curation.qc.run_qc` (precision / recall from a checked sample),
:func:`~raddiag.curation.mapping.run_mapping` (disorders -> ICD-10-CM categories),
:func:`~raddiag.curation.normals.add_normals` (balance anatomy x modality with normal cases),
:func:`~raddiag.curation.export.export_dataset` (release JSON + label dicts + images).
The record schema and the WORK layout are documented in docs/curation.md.
"""
