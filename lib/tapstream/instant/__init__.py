"""Instant recovery: a volume at a checkpoint served without copying it first.

`extents` (interval map) and `planner` (which bytes come from where) are pure; `preserve` keeps what
the recovery VDSA overwrites while a view is open; `reader` answers reads; `view` opens and closes a
view (journal window, delta file, preserve session); `nbdkit_view` serves one read-only over NBD.
"""
