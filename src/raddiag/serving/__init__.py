"""raddiag.serving: inference for users.

- :mod:`.predict`: ``raddiag.load(RUN)`` -> :class:`~.predict.Predictor`; ``.predict(inputs)`` ->
  :class:`~.predict.CaseResult` (ranked :class:`~.predict.Finding` s, ``to_dict()``, a readable table);
  over several cases a :class:`~.predict.CaseError` stands in for each case that cannot be read.
  ``.embed(inputs)`` -> :class:`~.results.CaseEmbedding` (the case and per-scan embeddings).
- :mod:`.batch`: many cases from a manifest or a prepared dataset: predictions to JSON Lines
  (resumable), embeddings to ``.npz``.
- :mod:`.saliency`: Score-CAM maps and PNG overlays.
- :mod:`.app`: the HTTP service (``create_app``) and its page (``static/index.html``);
  :mod:`.uploads`: upload checks (content sniffing, limits, safe zip extraction).
- :mod:`.export`: TorchScript / ONNX export of the visual encoder and the case model.
- CLI (:mod:`.commands`): ``raddiag predict | embed | serve | export``.
"""
