"""Analyzers on the protected write stream (DESIGN §7), built on a small SDK over faust-streaming.

Built in: `encryption` (ransomware detection) and `change-rate`. Write your own by subclassing
`Analyzer` (see sdk.py and examples/write_sizes.py) and run it with
`python -m tapstream.analyzer run module:Class`.
"""

from tapstream.analyzer.sdk import AlertRequest, Analyzer, Checkpoint, Context, Event

__all__ = ["AlertRequest", "Analyzer", "Checkpoint", "Context", "Event"]
