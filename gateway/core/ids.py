"""Record and run ids: time-sortable, in the shape of Bubble's (`<unix ms>x<18 digits>`).

The digits come from a PRNG seeded from the OS once per process (and again in a forked
child): ids must not collide, but they are not secrets, and reading `os.urandom` for each
one costs more than the rest of a trivial request.
"""

from __future__ import annotations

import os
import random
import time
from datetime import datetime

_random = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))


def new_id(now: datetime | None = None) -> str:
    ms = int((now.timestamp() if now is not None else time.time()) * 1000)
    return f"{ms}x{_random.getrandbits(59):018d}"  # 59 bits: always 18 digits or fewer
