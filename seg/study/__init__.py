"""The upsampling study, learned vs fixed: its statistics over seeds, its report and
figures, and the orchestration of its sweep (``seg-compare`` is the command line).

A layer above training: it reads and launches runs, and ``seg.engine`` never imports it.
"""
