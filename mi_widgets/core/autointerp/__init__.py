"""Automated interpretability: LM-written descriptions of units, scored by simulation,
detection, fuzzing and intervention.

- ``client``: language models: ``OpenAIClient`` (any OpenAI-compatible chat-completions
  endpoint, standard library only; retries, timeouts) and ``LocalLM`` (a model from ``mw.load``,
  greedy).
- ``records``: the token windows a feature is explained from and scored on (from a
  ``FeatureData``), kept apart.
- ``explain``: ``explain(feature, data, explainer)``, prompt templates, ``RuleExplainer`` and
  executable rule explanations.
- ``scoring``: ``score_explanation(explanation, feature, data, scorer=...)`` with a
  random-explanation baseline; ``RuleSimulator``, ``LMScorer``.
- ``batch``: ``autointerp(data, ...)`` over every feature, with an SQLite cache (``Cache``).
"""
