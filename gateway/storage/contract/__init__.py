"""The storage contract: one narrow protocol per role, and the types they share.

`Storage` (in `lifecycle`) is a backend's lifecycle plus one attribute per role: `records`
(`RecordStore`), `runs` (`RunLog`), `jobs` (`JobStore`), `keys` (`KeyStore`), `users`
(`UserStore`), `idempotency` (`IdempotencyStore`) and `rates` (`RateCounter`), so a caller
that needs only records depends only on `RecordStore`. Both backends implement every role;
one contract test suite runs against both, so callers never need to know which one they
talk to. Adding a role: its protocol in a module of its own here, one property on
`Storage`, and per backend one module (`sqlite/job_store.py`) whose class the backend's
`storage` module sets as the attribute; mypy checks each backend against `Storage`.
"""

from __future__ import annotations

from gateway.storage.contract.detection_store import Detection as Detection
from gateway.storage.contract.detection_store import DetectionStore as DetectionStore
from gateway.storage.contract.idempotency_store import LOST_KEY as LOST_KEY
from gateway.storage.contract.idempotency_store import Claim as Claim
from gateway.storage.contract.idempotency_store import IdempotencyStore as IdempotencyStore
from gateway.storage.contract.idempotency_store import RateCounter as RateCounter
from gateway.storage.contract.job_store import JOB_STATUSES as JOB_STATUSES
from gateway.storage.contract.job_store import CallKeys as CallKeys
from gateway.storage.contract.job_store import Checkpoint as Checkpoint
from gateway.storage.contract.job_store import Job as Job
from gateway.storage.contract.job_store import JobEnd as JobEnd
from gateway.storage.contract.job_store import JobStore as JobStore
from gateway.storage.contract.job_store import KeyUse as KeyUse
from gateway.storage.contract.job_store import PendingBound as PendingBound
from gateway.storage.contract.job_store import Position as Position
from gateway.storage.contract.job_store import lease_lost as lease_lost
from gateway.storage.contract.job_store import series_of as series_of
from gateway.storage.contract.key_store import ApiKey as ApiKey
from gateway.storage.contract.key_store import KeyStore as KeyStore
from gateway.storage.contract.lifecycle import Lifecycle as Lifecycle
from gateway.storage.contract.lifecycle import Storage as Storage
from gateway.storage.contract.lifecycle import Transaction as Transaction
from gateway.storage.contract.options import Option as Option
from gateway.storage.contract.options import OptionSet as OptionSet
from gateway.storage.contract.record_store import RecordStore as RecordStore
from gateway.storage.contract.run_log import RunLog as RunLog
from gateway.storage.contract.run_log import RunLogLimits as RunLogLimits
from gateway.storage.contract.run_log import RunStats as RunStats
from gateway.storage.contract.types import CONSTRAINTS as CONSTRAINTS
from gateway.storage.contract.types import SYSTEM_KEYS as SYSTEM_KEYS
from gateway.storage.contract.types import Change as Change
from gateway.storage.contract.types import Constraint as Constraint
from gateway.storage.contract.types import FieldSpec as FieldSpec
from gateway.storage.contract.types import Page as Page
from gateway.storage.contract.types import SortKey as SortKey
from gateway.storage.contract.types import TypeSpec as TypeSpec
from gateway.storage.contract.user_store import Account as Account
from gateway.storage.contract.user_store import Session as Session
from gateway.storage.contract.user_store import UserStore as UserStore
