"""Long-running loops, each with ``run(stop: asyncio.Event)``: fetchdata, the batch ingest
manager, chunk workers, the stream ingest manager and monitor, the notifier, the API server.
``mysimbdp up`` wires them together in :mod:`mysimbdp.runtime.up`."""
