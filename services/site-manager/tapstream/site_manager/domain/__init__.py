"""The site manager's pure domain: aggregates (site, protection group, operation), their commands and
events, and the ledger that applies events in version order. Imports no I/O library."""

from tapstream.site_manager.domain.aggregates import (
    AGGREGATES,
    Aggregate,
    CheckpointLog,
    DomainError,
    GroupStatus,
    Invalid,
    NotFound,
    Operation,
    OperationStatus,
    ProtectionGroup,
    Site,
    VmLog,
)
from tapstream.site_manager.domain.events import Recorded
from tapstream.site_manager.domain.ledger import ConcurrencyError, Ledger, Outcome
from tapstream.site_manager.domain.vm_spec import VmSpec

__all__ = [
    "AGGREGATES",
    "Aggregate",
    "CheckpointLog",
    "ConcurrencyError",
    "DomainError",
    "GroupStatus",
    "Invalid",
    "Ledger",
    "NotFound",
    "Operation",
    "OperationStatus",
    "Outcome",
    "ProtectionGroup",
    "Recorded",
    "Site",
    "VmLog",
    "VmSpec",
]
