"""Evaluation and benchmarks: how well an exported encoder enrolls and detects words it never heard.

- ``fewshot``: N-way K-shot episodes (same / cross speaker, closed and open set), 95% CIs;
- ``streaming``: hours of noisy audio through the real enrollment and streaming detector,
  FRR vs false alarms per hour, DET curve;
- ``dtw`` and ``embedders``: the baselines (MFCC + DTW, Google's speech-embedding teacher)
  and our encoder behind one ``embed(samples) -> unit vector`` interface;
- ``guard``: refuses evaluation clips that training used, and "unseen" words that are not;
- ``cli``: ``kws-eval`` (``python -m trainer.evaluation``).

Nothing here imports TensorFlow, and nothing here ships to the device.
"""
