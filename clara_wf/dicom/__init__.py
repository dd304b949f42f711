"""The DICOM adapter: receive studies from a scanner or PACS, run a workflow per study, send the results back.

As Clara Deploy's DICOM Adapter did, and what the chart's ``dicomAdapter.input/output``
values exist for (seed 003): a Storage SCP receives instances (``scp``), keeps each one on
disk before acknowledging it and groups them by study or series (``store``); when a group
has been quiet for the inactivity timeout it becomes a job per configured workflow, run by
an engine with ``dicomAdapter.input`` holding the received files (``service``,
``jobrun``); every DICOM file the workflow leaves in ``dicomAdapter.output`` is sent to
each destination by C-STORE (or STOW-RS), with retries (``export``).

Only ``scp`` and ``export`` import pynetdicom/pydicom: ``config``, ``store`` and the
``jobs`` listing stay light, so ``clara-wf jobs`` starts fast.
"""
