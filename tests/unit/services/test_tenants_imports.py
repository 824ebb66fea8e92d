"""What the tenant commands (`tenant add`, `update`, `remove`) load: they name a tenant's broker
resources but never talk to a broker themselves, so no broker client is imported."""

from __future__ import annotations

import subprocess
import sys


def test_the_tenants_service_loads_no_broker_client() -> None:
    probe = (
        "import sys, mysimbdp.services.tenants; "
        "print(sorted(m for m in ('nats', 'aio_pika', 'psycopg') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
