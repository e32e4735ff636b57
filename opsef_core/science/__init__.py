"""Study science, kept apart from the plumbing (reading, running, recording).

- :mod:`opsef_core.science.clearing` — clearing quality along depth: depth
  normalisation, per-slice SNR/CNR, per-depth segmentation scores.
- :mod:`opsef_core.science.fucci` — FUCCI cell-cycle phase calls, phase accuracy and
  radial phase distributions.
- :mod:`opsef_core.science.spheroid` — single-spheroid readouts (area, diameter, volume,
  circularity) and growth tables.

The notebooks' workflows (:mod:`opsef_core.workflows`) call these on the tables and
labels of a run; the functions here take arrays and tables only.
"""
