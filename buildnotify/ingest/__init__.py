"""Webhook ingest: one module per CI dialect (registered in :mod:`.providers`),
all following the contract in :mod:`.base`; :mod:`.http` serves them."""
